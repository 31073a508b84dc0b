"""PrefixReuseIndex: a radix tree over full KV blocks keyed by chained block hashes.

Each node is one full block; its key is ``H(parent hash, block tokens, salt)``. A node's
children are bucketed by hash, and every bucket is a list, so colliding blocks coexist and
:class:`PrefixMatcher` picks the one whose stored tokens equal the query's. A salt (e.g. the
tenant id) enters the first block's hash and every later one through the chain, so tenants
with different salts never share blocks.

Invariants (``check_invariants``): every node's hash equals ``H(parent.hash, tokens, salt)``
and its salt equals its parent's (inserts verify the salt at every level);
``token_length == depth * block_size_tokens``; a node is in exactly its parent's bucket;
``len(index) == number of nodes``. All public methods hold one re-entrant lock, so concurrent
``insert``/``lookup``/``invalidate`` from several threads are safe.

Access time is a logical counter (one stamp per call), so eviction order is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
import operator
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType

from sagellm.core.types import BlockId
from sagellm.prefix_reuse.hashing import BlockHashFn, blake2b_block_hash
from sagellm.prefix_reuse.matcher import PrefixMatcher
from sagellm.prefix_reuse.metrics import PrefixReuseMetrics
from sagellm.prefix_reuse.policy import AccessRecord, EvictionPriority, LRUPriority
from sagellm.prefix_reuse.types import PrefixEntry, PrefixHit, PrefixLookup, TierName

_TOKENS = operator.attrgetter("token_ids")
_ENTRY = operator.attrgetter("_entry")


class _Node:
    __slots__ = (
        "_entry",
        "children",
        "entry_id",
        "kv_block_ids",
        "last_access",
        "metadata",
        "num_hits",
        "parent",
        "salt",
        "tier",
        "token_hash",
        "token_ids",
        "token_length",
    )

    def __init__(self, entry_id, token_hash, token_ids, salt, parent, token_length):
        self.entry_id: int | None = entry_id
        self.token_hash: int = token_hash
        self.token_ids: tuple[int, ...] = token_ids
        self.salt: str | None = salt
        self.parent: _Node | None = parent
        self.token_length: int = token_length
        self.children: dict[int, list[_Node]] = {}
        self.kv_block_ids: tuple[BlockId, ...] = ()
        self.tier: TierName = "device"
        self.metadata: MappingProxyType = MappingProxyType({})
        self.last_access = 0
        self.num_hits = 0
        self._entry: PrefixEntry | None = None

    def place(self, kv_block_ids: tuple[BlockId, ...], tier: TierName) -> None:
        """Set where the block's KV lives and rebuild its frozen entry (set ``metadata``
        first). Invariant: a placed node's ``_entry`` is current, so a lookup returns it as is."""
        self.kv_block_ids = kv_block_ids
        self.tier = tier
        parent = self.parent
        self._entry = PrefixEntry(
            entry_id=self.entry_id,
            token_hash=self.token_hash,
            token_length=self.token_length,
            kv_block_ids=self.kv_block_ids,
            metadata=self.metadata,
            tier=self.tier,
            parent_entry_id=parent.entry_id if parent and parent.parent is not None else None,
        )

    def entry(self) -> PrefixEntry:
        """The node as a frozen entry (built by :meth:`place`)."""
        return self._entry

    def record(self) -> AccessRecord:
        return AccessRecord(self.last_access, self.num_hits, self.token_length)


class PrefixReuseIndex:
    """Longest-prefix lookup of cached KV blocks, ``block_size_tokens`` tokens per block."""

    def __init__(
        self,
        block_size_tokens: int,
        hash_fn: BlockHashFn = blake2b_block_hash,
        matcher: PrefixMatcher | None = None,
        priority: EvictionPriority | None = None,
        metrics: PrefixReuseMetrics | None = None,
        trust_hash_chain: bool | None = None,
    ) -> None:
        """``trust_hash_chain``: a lookup given the prompt's hash chain compares the tokens of
        the last matched block only (salt on the first), taking equal chained hashes as equal
        blocks before it; None = trust the built-in 64-bit BLAKE2b chain only (a false match
        needs a 2**-64 event under an already matched parent), verify every block otherwise."""
        if not isinstance(block_size_tokens, int) or block_size_tokens <= 0:
            raise ValueError(f"block_size_tokens must be an integer > 0, got {block_size_tokens!r}")
        self.block_size_tokens = block_size_tokens
        self.hash_fn = hash_fn
        self.matcher = matcher or PrefixMatcher()
        self.priority = priority or LRUPriority()
        self.metrics = metrics or PrefixReuseMetrics()
        if trust_hash_chain is None:
            trust_hash_chain = hash_fn is blake2b_block_hash
        self.trust_hash_chain = trust_hash_chain
        self._root = _Node(None, 0, (), None, None, 0)  # holds no block; never returned
        self._nodes: dict[int, _Node] = {}
        self._slices: list[slice] = []  # see _block_slices
        self._ids = itertools.count()
        self._clock = 0
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._nodes)

    # ------------------------------------------------------------------ lookup / insert

    def _blocks(self, token_ids: Sequence[int], num_blocks: int) -> Iterator[tuple[int, ...]]:
        bs = self.block_size_tokens
        for i in range(num_blocks):
            yield tuple(token_ids[i * bs : (i + 1) * bs])

    def _child(self, node: _Node, h: int, block: tuple[int, ...], salt: str | None):
        bucket = node.children.get(h)
        if bucket is None:
            return None
        for cand in bucket:
            if self.matcher.verify(cand.token_ids, block, cand.salt, salt):
                return cand
            self.metrics.record_collision()
        return None

    def block_hashes(
        self,
        token_ids: Sequence[int],
        salt: str | None,
        num_blocks: int,
        known: Sequence[int] = (),
    ) -> list[int]:
        """Chained hashes of the first ``num_blocks`` full blocks of ``token_ids``, extending
        ``known`` (the chain's first hashes, computed earlier for the same tokens and salt),
        so a growing sequence hashes each block once."""
        out = list(known[:num_blocks])
        bs = self.block_size_tokens
        for i in range(len(out), num_blocks):
            block = token_ids[i * bs : (i + 1) * bs]
            out.append(self.hash_fn(out[-1] if i else None, block, salt))
        return out

    def _block_slices(self, num_blocks: int) -> list[slice]:
        """``slice(i * B, (i + 1) * B)`` for the first ``num_blocks`` blocks (kept, grown)."""
        cached, bs = self._slices, self.block_size_tokens
        if len(cached) < num_blocks:
            cached.extend(slice(i * bs, (i + 1) * bs) for i in range(len(cached), num_blocks))
        return cached[:num_blocks]

    def _walk_hashes(self, hashes: Sequence[int]) -> list[_Node]:
        """The path that follows ``hashes`` from the root taking each bucket's first node: one
        dict probe per block, nothing verified yet."""
        node, path = self._root, []
        append = path.append
        for h in hashes:
            bucket = node.children.get(h)
            if bucket is None:
                break
            node = bucket[0]
            append(node)
        return path

    def _verified_prefix(self, path: list[_Node], token_ids: Sequence[int], salt) -> int:
        """How many leading nodes of ``path`` hold exactly the query's blocks under ``salt``
        (the default matcher's test). With ``trust_hash_chain`` the last block's tokens are
        compared (all blocks when they differ); otherwise all blocks at C speed in one list
        compare, and the per-block loop runs only on a mismatch. Salt: checked on the first
        node only, since a node's salt equals its parent's (``check_invariants``)."""
        if not path or path[0].salt != salt:
            return 0
        n = len(path)
        if self.trust_hash_chain:
            last = token_ids[(n - 1) * self.block_size_tokens : n * self.block_size_tokens]
            if path[-1].token_ids == (last if type(last) is tuple else tuple(last)):
                return n
        bs = self.block_size_tokens
        toks = token_ids if type(token_ids) is tuple else tuple(token_ids[: n * bs])
        blocks = list(map(toks.__getitem__, self._block_slices(n)))
        stored = list(map(_TOKENS, path))
        if stored == blocks:
            return n
        k = 0
        while stored[k] == blocks[k]:
            k += 1
        return k

    def lookup(
        self,
        token_ids: Sequence[int],
        salt: str | None = None,
        record_request: bool = True,
        hashes: Sequence[int] | None = None,
        touch: bool = True,
    ) -> PrefixLookup:
        """Longest cached prefix of ``token_ids`` made of full blocks, capped at
        ``len(token_ids) - 1`` tokens. Touches the matched entries (LRU) unless ``touch`` is
        False (a read-only peek: no recency, hit count or metric changes). ``hashes``: the
        prompt's chained block hashes when the caller has them (see :meth:`block_hashes`).

        With ``hashes`` and the default matcher a hit costs one dict probe per block, then a
        compare of the last block's tokens (``trust_hash_chain``) or one C-level compare of
        all matched blocks' tokens."""
        t0 = time.perf_counter()
        n = len(token_ids)
        bs = self.block_size_tokens
        max_blocks = max(0, (n - 1) // bs)
        known = 0 if hashes is None else min(len(hashes), max_blocks)
        with self._lock:
            if touch:
                self._clock += 1
            clock = self._clock
            path: list[_Node] = []
            if known and type(self.matcher) is PrefixMatcher:
                path = self._walk_hashes(hashes[:known] if len(hashes) > known else hashes)
                walked = len(path)
                del path[self._verified_prefix(path, token_ids, salt) :]
                if len(path) == walked < known:
                    known = -1  # a verified miss: no node holds the next block's hash
            if known >= 0:  # block by block: no chain, a failed compare, or the chain ran out
                self._extend(path, token_ids, salt, max_blocks, hashes, max(known, 0))
            if touch:
                for node in path:
                    node.last_access = clock
                    node.num_hits += 1
            entries = tuple(map(_ENTRY, path))
        length = len(entries) * self.block_size_tokens
        hit = PrefixHit(length, 1.0 if entries else 0.0, n - length)
        if touch:
            self.metrics.record_lookup_latency(time.perf_counter() - t0)
            if record_request:
                self.metrics.record_request(n, length)
        return PrefixLookup(hit, entries)

    def _extend(self, path, token_ids, salt, max_blocks, hashes, known) -> None:
        """Grow ``path`` (a verified match of its length) block by block up to ``max_blocks``,
        hashing blocks past the ``known`` ones, verifying each with the matcher."""
        if len(path) >= max_blocks:
            return
        bs = self.block_size_tokens
        node = path[-1] if path else self._root
        toks = token_ids if type(token_ids) is tuple else tuple(token_ids)  # tuple slices
        for i in range(len(path), max_blocks):
            block = toks[i * bs : (i + 1) * bs]
            if i < known:
                h = hashes[i]
            else:
                h = self.hash_fn(node.token_hash if node is not self._root else None, block, salt)
            child = self._child(node, h, block, salt)
            if child is None:
                return
            path.append(child)
            node = child

    def insert(
        self,
        token_ids: Sequence[int],
        kv_block_ids: Sequence[BlockId],
        salt: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
        tier: TierName = "device",
        hashes: Sequence[int] | None = None,
        parent_entry_id: int | None = None,
    ) -> list[PrefixEntry]:
        """Index the full blocks of ``token_ids`` (block i held by ``kv_block_ids[i]``).

        Blocks already indexed keep their stored KV location (the caller's duplicate block
        is not adopted: compare the returned entries' ``kv_block_ids``). Returns the entries
        along the path, one per full block covered by both arguments.

        ``parent_entry_id``: continue below that entry (indexed earlier for the same tokens
        and salt, covering ``token_ids[:k * B]``); only blocks ``k..`` are walked and
        returned, so a sequence adding one block at a time costs one block each (``hashes``,
        when given, holds the chain from block 0 and saves re-hashing).
        """
        num_blocks = min(len(token_ids) // self.block_size_tokens, len(kv_block_ids))
        meta = MappingProxyType(dict(metadata or {}))
        out: list[PrefixEntry] = []
        with self._lock:
            self._clock += 1
            node, start = self._root, 0
            if parent_entry_id is not None:
                node = self._nodes.get(parent_entry_id)
                if node is None:
                    raise KeyError(f"parent_entry_id {parent_entry_id} is not indexed")
                if node.salt != salt:  # keeps "a node's salt is its parent's" (see lookup)
                    raise ValueError(f"parent_entry_id {parent_entry_id} has another salt")
                start = node.token_length // self.block_size_tokens
            bs = self.block_size_tokens
            for i in range(start, num_blocks):
                block = tuple(token_ids[i * bs : (i + 1) * bs])
                if hashes is not None and i < len(hashes):
                    h = hashes[i]
                else:
                    parent_hash = node.token_hash if node is not self._root else None
                    h = self.hash_fn(parent_hash, block, salt)
                child = self._child(node, h, block, salt)
                if child is None:
                    child = _Node(
                        next(self._ids), h, block, salt, node, (i + 1) * self.block_size_tokens
                    )
                    child.metadata = meta
                    child.place((kv_block_ids[i],), tier)
                    node.children.setdefault(h, []).append(child)
                    self._nodes[child.entry_id] = child
                child.last_access = self._clock
                out.append(child.entry())
                node = child
        return out

    # ------------------------------------------------------------------ removal / moves

    def get(self, entry_id: int) -> PrefixEntry | None:
        with self._lock:
            node = self._nodes.get(entry_id)
            return node.entry() if node is not None else None

    def leaf(self, entry_id: int) -> PrefixEntry | None:
        """The entry when ``entry_id`` is indexed and has no children (removable on its own),
        else None (one lock for what a victim search asks of every candidate)."""
        with self._lock:
            node = self._nodes.get(entry_id)
            return node._entry if node is not None and not node.children else None

    def entries(self) -> list[PrefixEntry]:
        """All entries, parents before children."""
        with self._lock:
            return [self._nodes[i].entry() for i in sorted(self._nodes)]

    def invalidate(self, entry_id: int) -> list[PrefixEntry]:
        """Remove an entry and its whole subtree (its descendants are unreachable without it).
        Returns the removed entries (empty when ``entry_id`` is unknown)."""
        with self._lock:
            node = self._nodes.get(entry_id)
            if node is None:
                return []
            bucket = node.parent.children[node.token_hash]
            bucket.remove(node)
            if not bucket:
                del node.parent.children[node.token_hash]
            removed, stack = [], [node]
            while stack:
                cur = stack.pop()
                removed.append(cur.entry())
                del self._nodes[cur.entry_id]
                for kids in cur.children.values():
                    stack.extend(kids)
            return removed

    def relocate(self, entry_id: int, kv_block_ids: Sequence[BlockId], tier: TierName) -> None:
        """Record that the entry's KV now lives at ``kv_block_ids`` in ``tier``."""
        with self._lock:
            self._nodes[entry_id].place(tuple(kv_block_ids), tier)

    def remap_blocks(self, mapping: Mapping[BlockId, BlockId], tier: TierName = "device") -> int:
        """Rewrite block ids of entries in ``tier`` (after defragmentation); returns how many
        entries changed."""
        changed = 0
        with self._lock:
            for node in self._nodes.values():
                if node.tier == tier and any(b in mapping for b in node.kv_block_ids):
                    node.place(tuple(mapping.get(b, b) for b in node.kv_block_ids), tier)
                    changed += 1
        return changed

    def select_victims(
        self, num_blocks: int, can_evict: Callable[[PrefixEntry], bool] | None = None
    ) -> list[PrefixEntry]:
        """Up to ``num_blocks`` entries (any position in the tree) in eviction order: smallest
        policy priority first, deeper first on ties. Removes nothing."""
        with self._lock:
            keyed = []
            for node in self._nodes.values():
                e = node.entry()
                if can_evict is None or can_evict(e):
                    keyed.append((self.priority.priority(node.record()), -node.token_length, e))
            best = heapq.nsmallest(num_blocks, keyed, key=lambda k: (k[0], k[1], k[2].entry_id))
            return [k[2] for k in best]

    def evict_lru(
        self, num_blocks: int, can_evict: Callable[[PrefixEntry], bool] | None = None
    ) -> list[PrefixEntry]:
        """Remove up to ``num_blocks`` leaf entries in eviction order (a parent becomes a
        candidate once its children are gone). Returns the removed entries in order."""
        removed: list[PrefixEntry] = []
        with self._lock:
            heap: list[tuple[float, int, int]] = []

            def push(node: _Node) -> None:
                if node.children or node is self._root:
                    return
                e = node.entry()
                if can_evict is None or can_evict(e):
                    prio = self.priority.priority(node.record())
                    heapq.heappush(heap, (prio, -node.token_length, node.entry_id))

            for node in list(self._nodes.values()):
                push(node)
            while heap and len(removed) < num_blocks:
                _, _, eid = heapq.heappop(heap)
                node = self._nodes.get(eid)
                if node is None or node.children:
                    continue
                parent = node.parent
                removed.extend(self.invalidate(eid))
                if parent is not None and parent is not self._root:
                    push(parent)
        return removed

    # ------------------------------------------------------------------ checks

    def check_invariants(self) -> None:
        """Raise AssertionError when the tree is inconsistent (used by property tests)."""
        with self._lock:
            seen = 0
            stack = [(self._root, 0)]
            while stack:
                node, depth = stack.pop()
                for h, kids in node.children.items():
                    for kid in kids:
                        parent_hash = node.token_hash if node is not self._root else None
                        want = self.hash_fn(parent_hash, kid.token_ids, kid.salt)
                        assert kid.token_hash == h == want
                        assert kid.parent is node
                        assert node is self._root or kid.salt == node.salt  # see lookup
                        assert kid._entry.kv_block_ids == kid.kv_block_ids
                        assert kid.token_length == (depth + 1) * self.block_size_tokens
                        assert self._nodes[kid.entry_id] is kid
                        seen += 1
                        stack.append((kid, depth + 1))
            assert seen == len(self._nodes)

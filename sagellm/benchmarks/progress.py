"""One overall progress bar per benchmark run.

The bar counts measured requests finished (or rejected, or failed) of ``repeats x requests
per repeat``, shows elapsed and remaining time (tqdm's estimate from the rate so far) and the
current repeat, and stays on screen when the run ends. Warm-up requests are not counted.
"""

from __future__ import annotations


class RunProgress:
    """``RunProgress(desc, num_repeats, enabled)``; call :meth:`start_repeat` before each
    repeat, :meth:`request_done` per finished request, :meth:`close` at the end."""

    def __init__(self, desc: str, num_repeats: int, enabled: bool | None = True) -> None:
        self.desc = desc
        self.num_repeats = num_repeats
        self.enabled = enabled is not False
        self._bar = None
        self._counted = 0  # requests of the repeats started so far

    def start_repeat(self, repeat: int, num_requests: int) -> None:
        """Repeat ``repeat`` (0-based) with ``num_requests`` requests begins."""
        from tqdm.auto import tqdm

        self._counted += num_requests
        if self._bar is None:
            self._bar = tqdm(
                total=num_requests * self.num_repeats,
                desc=self.desc,
                unit="req",
                disable=not self.enabled,
                leave=True,
                dynamic_ncols=True,
            )
        else:  # a repeat of another size: keep the total honest
            remaining = self.num_repeats - repeat - 1
            self._bar.total = self._counted + num_requests * remaining
        self._bar.set_postfix_str(f"repeat {repeat + 1}/{self.num_repeats}", refresh=True)

    def request_done(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def write(self, message: str) -> None:
        """Print a line above the bar (or plainly when there is no bar yet)."""
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

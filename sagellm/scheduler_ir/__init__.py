"""scheduler_ir: IRNode/IRGraph, IRBuilder, IROptimizer, ExecutionPlan, ExecutorAPI, PDSeparator
and strategies. Filled by its own issue.
"""

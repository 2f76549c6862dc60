"""Evaluation of simulated answers against ground truth: the pure metrics (`metrics`) and the plots (`plots`).

The `evaluate` stage (`factory.stages.evaluate`) wires them to datasets; everything here takes plain numpy,
pandas or Python values so it can be tested by hand.
"""

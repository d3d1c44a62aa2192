"""Policy objectives (docs/methods.md s4): SFT, DPO, MMPO/cDPO, IPO and iterative GPO.

Framework-free: nothing here imports kedro.
"""

"""Policy objectives (methods.md section 4): SFT, DPO, MMPO/cDPO, IPO and iterative GPO.

Framework-free: nothing here imports kedro.
"""

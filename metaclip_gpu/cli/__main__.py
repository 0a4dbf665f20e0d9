"""``python -m metaclip_gpu.cli``."""

from metaclip_gpu.cli import main

main()

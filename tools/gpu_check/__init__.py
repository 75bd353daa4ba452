"""The GPU check (``make gpu-check``): this toolkit's training and evaluation at 7B scale on one GPU, from a model
config only (``python tools/gpu_check --help``).

``__main__.py`` is the script (its settings and the run, stage by stage), ``stages.py`` the model and the runs,
``measure.py`` the figures (machine, FLOPs, utilisation, decode speed), ``report.py`` the printed table. The model
configs are in ``tools/gpu_check_configs/``; ``tools/gpu_check_wheels.sh`` fetches the wheels for an offline box.
"""

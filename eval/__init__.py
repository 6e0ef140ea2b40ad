"""Downstream evaluation of pretrained backbones. Each command (``python -m eval.linear_probe``, ``eval.knn``,
``eval.finetune``) has a Python function beside it that takes the same options and returns the result record::

    from eval import finetune, knn, linear_probe
    result = linear_probe.run("runs/NAME", dataset="fashion-mnist", batch_size=512)
    result["top1"]
"""

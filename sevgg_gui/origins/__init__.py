"""Where a model comes from: one small resolver per origin behind :func:`sevgg_gui.zoo.load_model`.

``checkpoint`` (VGG16-SE, `sevgg train` and torchvision SE state dicts, and the default VGG16-SE),
``torchvision_models`` (``pretrained:<name>``), ``attention`` (``vgg16:<attention>``), ``timm_models``
(``timm:<name>[.<tag>][:random]``), ``hf_folder`` (a folder with ``config.json`` + weights) and
``user_code`` (``--model-code FILE.py:FUNCTION``). Each returns the same :class:`LoadedModel` record.
Nothing is imported here, so the zoo pays only for the resolver a spec needs (timm stays unimported
unless a timm model is asked for).
"""

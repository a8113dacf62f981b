"""LeRobot's Pi0.5 as this project runs it: the compatibility layer for stock transformers
(``compat``) and its proof against the reference vectors (``reference``), the model's sizes
(``dims``) and construction (``build``), the ``policy:`` config (``config``), processors, the local
tokenizer, freezing, and the training loss. Nothing here reads data, checkpoints or params files."""

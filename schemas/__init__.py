"""pandera DataFrameModels: the declared shape of every frame bulkcapture reads or writes."""

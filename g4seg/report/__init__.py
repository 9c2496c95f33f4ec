"""Tables, plots, the HTML page and its gallery, from a metrics document and per-sample
results. Computes no metric of its own (it calls `evaluation`)."""

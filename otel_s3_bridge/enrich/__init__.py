"""Enrich: what a record gains between decoding and storing.

`pricing`: a cost for every call whose sender reports none, from its tokens (the deployment's own
rates, else genai-prices' bundled table). Per-key policies belong here too.

Receives a decoded record; hands it back with fields filled. Pure functions over records (the one
file read is the --prices file, at the edges): must not do I/O on the export path, read clocks or
fetch anything from the network.
"""

"""Per-stage benchmark of the runtime on the machine it runs on (``edge-runtime bench``).

Modules, one concept each:

- ``timing``: timing loops, latency statistics, peak memory.
- ``platform_info``: board, CPU, OS and library versions.
- ``inputs``: frames from a video or the sample photo.
- ``stages``: what each stage times, in pipeline order.
- ``pipeline``: the capture loop end to end.
- ``records``: the result document and its JSON Schema.
- ``writers``: JSON, CSV, ``latest.json`` and the text table.
- ``chart``: the PNG bar chart.
- ``summary``: the compact summary published retained over MQTT.
"""

"""Reporting shared by bots and the position server: charts, Discord, InfluxDB and their samples.

``samples`` (the plain records every reporter reads), ``charts`` (matplotlib figures, rendered off
the loop), ``discord`` (the webhook poster), ``influx`` (the bounded non-blocking writer). Nothing
here is imported at bot start unless a reporter is configured: matplotlib and pillow load lazily.
"""

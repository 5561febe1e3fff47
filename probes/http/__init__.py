"""The ``http`` probe: a server's HTTP/1.1 traffic observed passively on its listening ports.

``probe`` starts and stops the capture process and reads what it wrote; ``capture`` is that
process (``python -m probes.http.capture``); ``netcap`` reads packets (AF_PACKET, IP/TCP headers
by dpkt) into ordered TCP streams; ``flow`` parses HTTP/1.1 exchanges out of those streams
(llhttp, through httptools)."""

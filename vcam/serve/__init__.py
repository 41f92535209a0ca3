"""Remote mode: `vcam serve` runs the model for cameras elsewhere, over WebRTC (aiortc).

- `server`: the HTTP signalling endpoints (our client's offer, WHIP, WHEP, the browser page), token auth;
- `engine`: one worker thread that steps every client's stream, stacking the UNet calls of clients on the
  same UNet (`vcam.model.batch`);
- `streams`: one client's stream state (its own pipeline or translator, input slot, latency figures);
- `rtc`: the aiortc pieces (tracks, peer connections, SDP checks);
- `client`: the laptop side's connection, used by `vcam.translators.remote.RemoteTranslator`;
- `token`: the access token and its 0600 files.
"""

#: seconds a client may send no frame before the server drops it and frees its state (its process killed,
#: its network gone: ICE consent and RTCP stop with the frames); `vcam serve --idle-timeout`
IDLE_TIMEOUT_S = 6.0

#!/usr/bin/python3
"""A GStreamer webrtcbin peer for the relay, with GStreamer's defaults: its own (RSA)
certificate, libnice's keepalive by binding indications.

    peer.py publish    sends a test pattern as H.264 (x264, constrained baseline)
    peer.py play       receives one H.264 stream and decodes it (libav)

Talks JSON lines: writes {"offer": sdp} once ICE gathering is complete (the relay takes
no trickled candidates), reads {"answer": sdp}, then writes {"frames": n, ...} every
second: frames encoded (publish) or decoded (play) so far.
"""

import json
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

RTP_H264 = "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000"
H264_CAPS = f"{RTP_H264},packetization-mode=(string)1,profile-level-id=(string)42e01f"


def say(message):
    print(json.dumps(message), flush=True)


class Peer:
    def __init__(self, role):
        self.role = role
        self.frames = 0
        self.lock = threading.Lock()
        if role == "publish":
            self.pipeline = Gst.parse_launch(
                "videotestsrc is-live=true pattern=ball ! "
                "video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! "
                "identity name=counter signal-handoffs=true ! "
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=400 ! "
                "video/x-h264,profile=constrained-baseline ! "
                "rtph264pay config-interval=-1 aggregate-mode=zero-latency ! "
                f"{RTP_H264} ! webrtcbin name=rtc bundle-policy=max-bundle"
            )
            self.pipeline.get_by_name("counter").connect("handoff", self.count)
        else:
            self.pipeline = Gst.Pipeline.new("play")
            rtc = Gst.ElementFactory.make("webrtcbin", "rtc")
            rtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipeline.add(rtc)
        self.rtc = self.pipeline.get_by_name("rtc")
        # The relay listens on loopback, which libnice leaves out when it lists the
        # machine's addresses; everything else is libnice's default.
        loopback = Nice.Address()
        loopback.set_from_string("127.0.0.1")
        # (Both objects are kept: PyGObject's getter would drop webrtcbin's reference.)
        self.ice = self.rtc.get_property("ice-agent")
        self.nice = self.ice.get_property("agent")
        self.nice.add_local_address(loopback)
        if role == "play":
            self.rtc.emit(
                "add-transceiver",
                GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                Gst.Caps.from_string(H264_CAPS),
            )
            self.rtc.connect("pad-added", self.on_pad)
        self.rtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.rtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.offered = False

    def count(self, *_):
        with self.lock:
            self.frames += 1

    def on_pad(self, _, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.parse_bin_from_description(
            "rtph264depay ! h264parse ! avdec_h264 ! "
            "identity name=counter signal-handoffs=true ! fakesink sync=false",
            True,
        )
        decode.get_by_name("counter").connect("handoff", self.count)
        self.pipeline.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_negotiation_needed(self, _):
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        self.rtc.emit("create-offer", None, promise)

    def on_offer(self, promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        if offer is None:
            say({"error": f"no offer: {reply.to_string()}"})
            return
        self.rtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, *_):
        state = self.rtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offered:
            self.offered = True
            local = self.rtc.get_property("local-description")
            say({"offer": local.sdp.as_text()})
            threading.Thread(target=self.read_answer, daemon=True).start()

    def read_answer(self):
        line = sys.stdin.readline()
        if not line:
            return
        _, sdp = GstSdp.SDPMessage.new_from_text(json.loads(line)["answer"])
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        GLib.idle_add(lambda: self.rtc.emit("set-remote-description", answer, Gst.Promise.new()) and False)

    def report(self):
        with self.lock:
            frames = self.frames
        state = self.rtc.get_property("connection-state").value_nick
        say({"frames": frames, "connection": state})
        return True


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("publish", "play"):
        sys.exit("usage: peer.py publish|play")
    Gst.init(None)
    peer = Peer(sys.argv[1])
    loop = GLib.MainLoop()
    bus = peer.pipeline.get_bus()
    bus.add_signal_watch()

    def on_error(_, message):
        error, debug = message.parse_error()
        say({"error": f"{error.message} ({debug})"})
        loop.quit()

    bus.connect("message::error", on_error)
    peer.pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add_seconds(1, peer.report)
    loop.run()


if __name__ == "__main__":
    main()

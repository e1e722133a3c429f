// Live feed from the theramark display server: a snapshot on connect, then one message per item.
// Reconnects by itself; items already seen (by seq) are ignored. No dependencies.
"use strict";

function theramarkFeed(handlers) {
  let lastSeq = 0;
  let delay = 250;
  let socket = null;

  function status(text, ok) {
    if (handlers.status) handlers.status(text, ok);
  }

  function fresh(item) {
    if (item.seq === undefined || item.seq === null) return true;
    if (item.seq <= lastSeq) return false;
    lastSeq = item.seq;
    return true;
  }

  function onMessage(event) {
    const msg = JSON.parse(event.data);
    if (msg.type === "snapshot") {
      lastSeq = 0;
      for (const r of msg.records) lastSeq = Math.max(lastSeq, r.seq || 0);
      for (const m of msg.messages) lastSeq = Math.max(lastSeq, m.seq || 0);
      handlers.snapshot(msg.run || {}, msg.records || [], msg.messages || []);
    } else if (msg.type === "record") {
      if (fresh(msg.record)) handlers.record(msg.record);
    } else if (msg.type === "message") {
      if (fresh(msg.message) && handlers.message) handlers.message(msg.message);
    } else if (msg.type === "run") {
      handlers.run(msg.run || {});
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws");
    status("connecting", false);
    socket.onopen = () => { delay = 250; status("connected", true); };
    socket.onmessage = onMessage;
    socket.onclose = () => {
      status("disconnected, reconnecting", false);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 4000);
    };
    socket.onerror = () => socket.close();
  }

  connect();
}

// A record value that is a usable number (JSON null stands for NaN / no value).
function theramarkNumber(v) {
  return typeof v === "number" && isFinite(v);
}

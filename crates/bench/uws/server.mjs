// A uWebSockets.js peer for the load tool (crates/bench): a small server that
// speaks sente-lite's JSON protocol (docs/PROTOCOL.md) on top of
// @trufflesuite/uws-js-unofficial, so the tool's sente-lite client measures it
// unchanged. Fan-out uses uWS's own topics (ws.subscribe / app.publish), which
// frame a message once and write it corked to every subscriber. `data` is
// relayed byte for byte: its raw text is sliced out of the incoming frame.
//
//   node server.mjs --port 9001        (or PORT=9001 node server.mjs)
//
// Prints `listening 127.0.0.1:<port>` when ready; SIGTERM / SIGINT close every
// connection (1001 server-shutdown) and exit 0. See README.md beside it.

import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";

const require = createRequire(import.meta.url);

// ---- Options -------------------------------------------------------------

function option(name, env, fallback) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${name}` && i + 1 < argv.length) return argv[i + 1];
    if (argv[i].startsWith(`--${name}=`)) return argv[i].slice(name.length + 3);
  }
  const v = env && process.env[env];
  return v !== undefined && v !== "" ? v : fallback;
}

function intOption(name, env, fallback, min, max) {
  const raw = option(name, env, String(fallback));
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`server.mjs: --${name} must be an integer in ${min}..${max}, got ${raw}`);
    process.exit(2);
  }
  return n;
}

const HOST = "127.0.0.1";
const PORT = intOption("port", "PORT", 0, 0, 65535);
/** Largest frame a client may send (sente-lite's `max-message-bytes`). */
const MAX_PAYLOAD = intOption("max-payload", "UWS_MAX_PAYLOAD", 1 << 20, 1024, 1 << 30);
/** Bytes that may wait for one client before it is closed (sente-lite's
 * `max-outbound-bytes`, 1 MiB). */
const MAX_BACKPRESSURE = intOption("max-backpressure", "UWS_MAX_BACKPRESSURE", 1 << 20, 1024, 1 << 30);

const MAX_CHANNEL_ID_BYTES = 256; // channels.max-channel-id-bytes
const DEFAULT_RPC_TIMEOUT_MS = 30000; // channels.default-config.rpc-timeout-ms
const MAX_RPC_TIMEOUT_MS = 300000; // channels.max-rpc-timeout-ms
const MAX_NESTING = 128; // as sente-lite: a frame nested deeper is invalid-json

// ---- The native uWS (never the `ws` fallback the package falls back to) ----

function loadNative() {
  const pkg = "@trufflesuite/uws-js-unofficial";
  const file = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  try {
    const dir = require.resolve(`${pkg}/package.json`).replace(/package\.json$/, "");
    return require(`${dir}binaries/${file}`);
  } catch (e) {
    console.error(
      `server.mjs: cannot load the native uWS build ${file} of ${pkg} ` +
        `(Node ${process.version}); the package's JavaScript fallback is not used, ` +
        `it would not measure uWS. Run crates/bench/install-uws.sh. ${e.message}`,
    );
    process.exit(1);
  }
}

const uWS = loadNative();

// ---- Ids and clock ---------------------------------------------------------

const TAG = randomBytes(4).toString("hex");
const GEN = (Date.now() % 1e9).toString();
let nextConn = 0;
let nextMessage = 0;
let nextRequest = 0;

function newEpoch() {
  return randomBytes(4).toString("hex");
}

// ---- Frames (field names and order as sente-lite serializes them) ---------

const str = JSON.stringify;

function errorFrame(reason, message, requestId) {
  let f = `{"type":"error","message":${str(message)},"reason":"${reason}","timestamp":${Date.now()}`;
  if (requestId !== undefined) f += `,"request-id":${str(requestId)}`;
  return f + "}";
}

// ---- Decoding ------------------------------------------------------------
//
// JSON.parse validates the frame and gives the small fields; `data` is taken
// as the exact text the client wrote by a scan of the (already valid) frame's
// top-level object. The scan jumps over strings with indexOf, so a long
// string (the tool's padding) costs one native search. It also refuses a
// field given twice (JSON.parse would keep the last) and nesting deeper than
// sente-lite allows.

const Q = 34; // "
const BS = 92; // \
const LB = 123; // {
const RB = 125; // }
const LK = 91; // [
const RK = 93; // ]
const CM = 44; // ,

const KNOWN_FIELDS = new Map(
  [
    "type", "channel-id", "request-id", "data", "exclude-sender", "timeout-ms",
    "error", "timestamp", "token", "limit", "cursor",
  ].map((k, i) => [k, 1 << i]),
);

function isWs(c) {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

function skipWs(t, i) {
  while (isWs(t.charCodeAt(i))) i++;
  return i;
}

/** Index just past the string that starts at `i` (t[i] is a quote). */
function stringEnd(t, i) {
  let j = i + 1;
  for (;;) {
    const q = t.indexOf('"', j);
    if (q < 0) return t.length; // cannot happen: t is valid JSON
    let k = q - 1;
    while (t.charCodeAt(k) === BS) k--;
    if (((q - 1 - k) & 1) === 0) return q + 1;
    j = q + 1;
  }
}

/** Index just past the value at `i`; -1 when nested deeper than `room`. */
function valueEnd(t, i, room) {
  const c = t.charCodeAt(i);
  if (c === Q) return stringEnd(t, i);
  const n = t.length;
  if (c !== LB && c !== LK) {
    let j = i + 1;
    while (j < n) {
      const d = t.charCodeAt(j);
      if (d === CM || d === RB || d === RK || isWs(d)) break;
      j++;
    }
    return j;
  }
  let depth = 0;
  let j = i;
  while (j < n) {
    const d = t.charCodeAt(j);
    if (d === Q) {
      j = stringEnd(t, j);
      continue;
    }
    if (d === LB || d === LK) {
      if (++depth > room) return -1;
    } else if (d === RB || d === RK) {
      if (--depth === 0) return j + 1;
    }
    j++;
  }
  return n;
}

/** Scans a valid JSON object text: returns `{ data }` (the raw text of the
 * top-level `data`, or undefined), or `{ err: [reason, message] }`. */
function scanTop(t) {
  let i = skipWs(t, 0) + 1; // past '{'
  let seen = 0;
  let data;
  for (;;) {
    i = skipWs(t, i);
    if (t.charCodeAt(i) === RB) break;
    const ke = stringEnd(t, i);
    let key = t.slice(i + 1, ke - 1);
    if (key.indexOf("\\") >= 0) key = JSON.parse(t.slice(i, ke));
    i = skipWs(t, skipWs(t, ke) + 1); // past ':'
    const ve = valueEnd(t, i, MAX_NESTING - 1);
    if (ve < 0) {
      return { err: ["invalid-json", `frame is nested more than ${MAX_NESTING} levels deep`] };
    }
    const bit = KNOWN_FIELDS.get(key);
    if (bit !== undefined) {
      if (seen & bit) return { err: ["invalid-message", `duplicate field \`${key}\``] };
      seen |= bit;
      if (bit === 8) data = t.slice(i, ve); // "data"
    }
    i = skipWs(t, ve);
    if (t.charCodeAt(i) === CM) i++;
  }
  return { data };
}

function kind(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  switch (typeof v) {
    case "boolean": return "a boolean";
    case "number": return "a number";
    case "string": return "a string";
    default: return "an object";
  }
}

class BadFrame extends Error {
  constructor(reason, message) {
    super(message);
    this.reason = reason;
  }
}

function reqString(o, field) {
  const v = o[field];
  if (v === undefined) throw new BadFrame("invalid-message", `missing field \`${field}\``);
  if (typeof v !== "string") {
    throw new BadFrame("invalid-message", `field \`${field}\` must be a string, got ${kind(v)}`);
  }
  return v;
}

function optBool(o, field) {
  const v = o[field];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") {
    throw new BadFrame("invalid-message", `field \`${field}\` must be a boolean, got ${kind(v)}`);
  }
  return v;
}

function optU64(o, field) {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new BadFrame(
      "invalid-message",
      `field \`${field}\` must be a non-negative integer, got ${typeof v === "number" ? v : kind(v)}`,
    );
  }
  return v;
}

function reqData(scan) {
  if (scan.data === undefined) throw new BadFrame("invalid-message", "missing field `data`");
  return scan.data;
}

// ---- Channels --------------------------------------------------------------

/** Channel id -> stream state; created on first subscribe or publish
 * (sente-lite auto-creates channels), kept for the process's life. */
const channels = new Map();

function channel(id) {
  let st = channels.get(id);
  if (st === undefined) {
    st = { idJson: str(id), offset: 0, epoch: newEpoch() };
    channels.set(id, st);
  }
  return st;
}

function validChannelId(id) {
  return id.length > 0 && (id.length * 3 <= MAX_CHANNEL_ID_BYTES || Buffer.byteLength(id) <= MAX_CHANNEL_ID_BYTES);
}

// ---- RPC -------------------------------------------------------------------

/** request-id -> { requester, requests (the requester's set of ids), channel,
 * timeoutMs, timer } */
const pending = new Map();

function forget(id) {
  const p = pending.get(id);
  if (p === undefined) return undefined;
  pending.delete(id);
  clearTimeout(p.timer);
  p.requests.delete(id);
  return p;
}

function timedOut(id) {
  const p = forget(id);
  if (p === undefined) return;
  const frame = errorFrame("rpc-timeout", `no rpc-response within ${p.timeoutMs} ms`, id);
  p.requester.cork(() => p.requester.send(frame, false));
}

// ---- Handlers --------------------------------------------------------------

const app = uWS.App();
const open = new Set();

function handle(ws, u, text) {
  let o;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new BadFrame("invalid-json", `frame is not valid JSON: ${e.message}`);
  }
  if (o === null || typeof o !== "object" || Array.isArray(o)) {
    throw new BadFrame("invalid-message", `frame must be a JSON object, got ${kind(o)}`);
  }
  const scan = scanTop(text);
  if (scan.err) throw new BadFrame(scan.err[0], scan.err[1]);
  if (o.type === undefined) throw new BadFrame("invalid-message", "missing field `type`");
  if (typeof o.type !== "string") {
    throw new BadFrame("invalid-message", `field \`type\` must be a string, got ${kind(o.type)}`);
  }
  switch (o.type) {
    case "publish": {
      const id = reqString(o, "channel-id");
      const data = reqData(scan);
      const exclude = optBool(o, "exclude-sender");
      if (!validChannelId(id)) {
        ws.send(`{"type":"publish-result","channel-id":${str(id)},"success":false,"reason":"invalid-channel-id"}`, false);
        return;
      }
      const st = channel(id);
      const mid = `msg-${TAG}-${++nextMessage}`;
      const frame =
        `{"type":"channel-message","channel-id":${st.idJson},"message-id":"${mid}","data":${data}` +
        `,"sender-conn-id":"${u.id}","published-at":${Date.now()},"offset":${++st.offset},"epoch":"${st.epoch}"}`;
      let delivered = app.numSubscribers(id);
      if (exclude && ws.isSubscribed(id)) {
        ws.publish(id, frame, false); // every subscriber but this one (see rpc-request)
        delivered -= 1;
      } else if (delivered > 0) {
        app.publish(id, frame, false);
      }
      ws.send(
        `{"type":"publish-result","channel-id":${st.idJson},"success":true,"message-id":"${mid}","delivered-to":${delivered}}`,
        false,
      );
      return;
    }
    case "subscribe": {
      const id = reqString(o, "channel-id");
      if (!validChannelId(id)) {
        ws.send(`{"type":"subscription-result","channel-id":${str(id)},"success":false,"reason":"invalid-channel-id"}`, false);
        return;
      }
      const st = channel(id);
      if (!ws.isSubscribed(id)) ws.subscribe(id);
      ws.send(
        `{"type":"subscription-result","channel-id":${st.idJson},"success":true,"subscriber-count":${app.numSubscribers(id)},"retained-messages":[]}`,
        false,
      );
      return;
    }
    case "unsubscribe": {
      const id = reqString(o, "channel-id");
      const ok = ws.unsubscribe(id);
      ws.send(
        `{"type":"unsubscription-result","channel-id":${str(id)},"success":${ok}${ok ? "" : ',"reason":"not-subscribed"'}}`,
        false,
      );
      return;
    }
    case "rpc-request": {
      const id = reqString(o, "channel-id");
      const data = reqData(scan);
      const asked = optU64(o, "timeout-ms");
      const fail = (reason) =>
        ws.send(
          `{"type":"rpc-request-result","channel-id":${str(id)},"delivery":{"success":false,"delivered-to":0,"reason":"${reason}"}}`,
          false,
        );
      if (!validChannelId(id)) return fail("invalid-channel-id");
      const self = ws.isSubscribed(id);
      const workers = app.numSubscribers(id) - (self ? 1 : 0);
      if (workers <= 0) return fail("no-subscribers");
      const timeoutMs = Math.min(asked === undefined ? DEFAULT_RPC_TIMEOUT_MS : asked, MAX_RPC_TIMEOUT_MS);
      const rid = `req-${++nextRequest}-${TAG}`;
      const chJson = channel(id).idJson;
      pending.set(rid, {
        requester: ws,
        requests: u.requests,
        channel: id,
        timeoutMs,
        timer: setTimeout(timedOut, timeoutMs, rid),
      });
      u.requests.add(rid);
      const call =
        `{"type":"rpc-request","request-id":"${rid}","channel-id":${chJson},"data":${data}` +
        `,"sender-conn-id":"${u.id}","timeout-ms":${timeoutMs}}`;
      // The requester never receives its own request. (ws.publish skips the
      // sender but, in this uWS, sends nothing from a socket that never
      // subscribed to anything: app.publish then, it excludes no one here.)
      if (self) ws.publish(id, call, false);
      else app.publish(id, call, false);
      ws.send(
        `{"type":"rpc-request-result","request-id":"${rid}","channel-id":${chJson},"delivery":{"success":true,"delivered-to":${workers}}}`,
        false,
      );
      return;
    }
    case "rpc-response": {
      const rid = reqString(o, "request-id");
      const data = reqData(scan);
      const error = optBool(o, "error");
      const p = pending.get(rid);
      if (p === undefined || p.requester === ws || !ws.isSubscribed(p.channel)) {
        ws.send(
          `{"type":"rpc-response-result","request-id":${str(rid)},"success":false,"reason":"request-not-found"}`,
          false,
        );
        return;
      }
      forget(rid);
      const frame = `{"type":"rpc-response","request-id":"${rid}","data":${data},"error":${error},"responder-conn-id":"${u.id}"}`;
      p.requester.cork(() => p.requester.send(frame, false));
      ws.send(`{"type":"rpc-response-result","request-id":"${rid}","success":true}`, false);
      return;
    }
    case "ping": {
      const ts = o.timestamp;
      ws.send(
        `{"type":"pong","timestamp":${Date.now()}${ts === undefined || ts === null ? "" : `,"original-timestamp":${str(ts)}`}}`,
        false,
      );
      return;
    }
    case "get-subscriptions":
      ws.send(`{"type":"subscription-list","subscriptions":${str(ws.getTopics())}}`, false);
      return;
    case "authenticate":
      reqString(o, "token");
      // As a default sente-lite server: no token is accepted.
      ws.send(`{"type":"authenticate-result","success":false,"reason":"unauthorized"}`, false);
      return;
    case "list-channels":
      throw new BadFrame("unknown-message-type", "`list-channels` is not implemented by this uWS peer");
    default:
      throw new BadFrame(
        "unknown-message-type",
        `unknown message type \`${Buffer.from(o.type).subarray(0, 64).toString()}\``,
      );
  }
}

app.ws("/*", {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_PAYLOAD,
  maxBackpressure: MAX_BACKPRESSURE,
  // Close a client that falls MAX_BACKPRESSURE behind, as sente-lite closes a
  // slow consumer, rather than silently skip it (uWS's default).
  closeOnBackpressureLimit: true,
  idleTimeout: 0, // no idle close: the tool holds idle connections open
  sendPingsAutomatically: false,
  maxLifetime: 0,

  open(ws) {
    const u = ws.getUserData();
    u.id = `conn-${GEN}-${++nextConn}`;
    u.requests = new Set();
    open.add(ws);
    ws.send(`{"type":"welcome","conn-id":"${u.id}","server-time":${Date.now()}}`, false);
  },

  message(ws, message, isBinary) {
    try {
      if (isBinary) {
        ws.send(errorFrame("binary-not-supported", "binary frames are not supported; send JSON as text frames"), false);
        return;
      }
      handle(ws, ws.getUserData(), Buffer.from(message).toString("utf8"));
    } catch (e) {
      if (e instanceof BadFrame) {
        ws.send(errorFrame(e.reason, e.message), false);
      } else {
        console.error("server.mjs: unexpected error:", e);
        try {
          ws.send(errorFrame("invalid-message", `internal error: ${e && e.message}`), false);
        } catch {
          // the socket is gone
        }
      }
    }
  },

  close(ws) {
    const u = ws.getUserData();
    open.delete(ws);
    for (const rid of u.requests) {
      const p = pending.get(rid);
      if (p !== undefined) {
        clearTimeout(p.timer);
        pending.delete(rid);
      }
    }
    u.requests.clear();
  },
});

app.get("/health", (res) => {
  res.cork(() => {
    res.writeHeader("content-type", "application/json").end(`{"status":"ok","connections":${open.size}}`);
  });
});

let listenSocket = null;
app.listen(HOST, PORT, (sock) => {
  if (!sock) {
    console.error(`server.mjs: cannot listen on ${HOST}:${PORT}`);
    process.exit(1);
  }
  listenSocket = sock;
  console.log(`listening ${HOST}:${uWS.us_socket_local_port(sock)}`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  if (listenSocket) uWS.us_listen_socket_close(listenSocket);
  listenSocket = null;
  for (const ws of [...open]) {
    try {
      ws.end(1001, "server-shutdown");
    } catch {
      // already closed
    }
  }
  // Let the close frames go out, then leave.
  setTimeout(() => process.exit(0), 100);
  console.log(`stopping on ${signal}`);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

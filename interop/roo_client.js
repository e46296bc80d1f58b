#!/usr/bin/env node
// A node-ipc 12.0.0 client shaped like Roo Code's IpcClient (packages/ipc/src/ipc-client.ts): the same
// singleton and config (silent only), the same id scheme, zod validation of every received frame, only
// origin "server" accepted, the Ack's clientId stamped on every command. It stands in for Roo's eval
// runner against our simulator and bridge:
//
//   node roo_client.js --socket PATH --script '[{"command": {...}}, {"after_event": "taskIdle", ...}]'
//   node roo_client.js --socket PATH --commands script.json --out messages.jsonl --until taskIdle
//   node roo_client.js --socket PATH --count-only --script '[...]' --until taskIdle   (benchmarks)
//
// A script step is {command, after_event?, count?}: it is sent once `count` (default 1) events named
// `after_event` ("*" = any event) have arrived since the previous step was sent; a step without
// after_event goes right after the previous one (the first one right after the Ack).
// stdout (or --out FILE) gets every received IpcMessage as a JSON line unless --count-only; the last
// stdout line is the summary ({"summary": true, valid, invalid, errors, events_by_name, ...}).
// It exits when the server drops the connection, at the first --until event received after the last
// step was sent, or at --timeout (exit 3).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const { performance } = require("node:perf_hooks");
const { parseArgs } = require("node:util");

const ipc = require("node-ipc").default;
const { ipcMessageSchema } = require("@roo-code/types");

function usage(message) {
	process.stderr.write(`roo_client.js: ${message}\n`);
	process.stderr.write(
		"usage: node roo_client.js --socket PATH [--commands FILE | --script JSON] [--out FILE] " +
			"[--until EVENT] [--timeout SECONDS] [--count-only]\n",
	);
	process.exit(2);
}

function options() {
	let parsed;
	try {
		parsed = parseArgs({
			allowPositionals: true,
			options: {
				socket: { type: "string" },
				commands: { type: "string" },
				script: { type: "string" },
				out: { type: "string" },
				until: { type: "string" },
				timeout: { type: "string", default: "60" },
				"count-only": { type: "boolean", default: false },
			},
		});
	} catch (err) {
		usage(err.message);
	}
	const v = parsed.values;
	const socket = v.socket ?? parsed.positionals[0];
	if (!socket) usage("--socket PATH is required");
	let steps = [];
	try {
		if (v.commands) steps = JSON.parse(fs.readFileSync(v.commands, "utf8"));
		else if (v.script) steps = JSON.parse(v.script);
	} catch (err) {
		usage(`bad command script: ${err.message}`);
	}
	if (!Array.isArray(steps) || steps.some((s) => !s || typeof s.command !== "object")) {
		usage("the command script must be a JSON list of {command, after_event?, count?}");
	}
	const timeout = Number(v.timeout);
	if (!(timeout > 0)) usage("--timeout must be a positive number of seconds");
	return { socket, steps, out: v.out, until: v.until, timeout, countOnly: v["count-only"] };
}

const opts = options();

const stdoutLine = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let writeMessage = null;
if (!opts.countOnly) {
	if (opts.out && opts.out !== "-") {
		const fd = fs.openSync(opts.out, "w");
		writeMessage = (obj) => fs.writeSync(fd, JSON.stringify(obj) + "\n");
	} else {
		writeMessage = stdoutLine;
	}
}

const stats = {
	valid: 0,
	invalid: 0,
	errors: [],
	received: 0,
	events: 0,
	bytes: 0,
	events_by_name: {},
	sent: [],
	firstEvent: 0,
	lastEvent: 0,
};

// --------------------------------------------------------------------------------------- client

const id = `roo-code-evals-${crypto.randomBytes(6).toString("hex")}`;
let isConnected = false;
let everConnected = false;
let clientId;

function sendCommand(command) {
	ipc.of[id]?.emit("message", { type: "TaskCommand", origin: "client", clientId, data: command });
	stats.sent.push(command.commandName);
}

let step = 0;
let seen = 0;

// Sends every step whose trigger has fired; `eventName` is the event that just arrived (null on Ack).
function advance(eventName) {
	let current = eventName;
	while (step < opts.steps.length) {
		const next = opts.steps[step];
		if (next.after_event !== undefined) {
			if (current === null || (next.after_event !== "*" && next.after_event !== current)) return;
			seen++;
			if (seen < (next.count ?? 1)) return;
		}
		sendCommand(next.command);
		step++;
		seen = 0;
		current = null; // an event triggers at most one waiting step
	}
}

function onMessage(data) {
	stats.received++;
	if (writeMessage) writeMessage(data);
	if (typeof data !== "object") {
		stats.invalid++;
		stats.errors.push({ issues: "not an object", data: JSON.stringify(data).slice(0, 500) });
		return;
	}
	const result = ipcMessageSchema.safeParse(data);
	if (!result.success) {
		stats.invalid++;
		stats.errors.push({ issues: result.error.issues, data: JSON.stringify(data).slice(0, 500) });
		return;
	}
	stats.valid++;
	const payload = result.data;
	if (payload.origin !== "server") return;
	if (payload.type === "Ack") {
		clientId = payload.data.clientId;
		advance(null);
	} else if (payload.type === "TaskEvent") {
		const name = payload.data.eventName;
		const now = performance.now();
		if (stats.events === 0) stats.firstEvent = now;
		stats.lastEvent = now;
		stats.events++;
		stats.events_by_name[name] = (stats.events_by_name[name] || 0) + 1;
		// --until counts only events that arrive after the whole script is out, so it can name an
		// event a step waits for (StartNewTask, CancelTask after taskIdle, --until taskIdle: the second).
		const scriptDone = step === opts.steps.length;
		advance(name);
		if (opts.until !== undefined && name === opts.until && scriptDone) finish("until");
	}
}

function onConnect() {
	if (isConnected) return;
	isConnected = true;
	everConnected = true;
	const socket = ipc.of[id]?.socket;
	// Registered after node-ipc's own 'data' listener; chunks are utf8 strings (setEncoding).
	if (socket) socket.on("data", (chunk) => (stats.bytes += Buffer.byteLength(chunk, "utf8")));
}

// node-ipc publishes 'disconnect' for every failed attempt too: a server not listening yet is retried
// (as Roo's client does), a server that drops an established connection ends the run.
function onDisconnect() {
	if (!isConnected) return;
	isConnected = false;
	if (everConnected) finish("disconnected");
}

// ------------------------------------------------------------------------------------------ end

let finished = false;

function summary(reason) {
	const seconds = (stats.lastEvent - stats.firstEvent) / 1000;
	return {
		summary: true,
		reason,
		client_id: clientId ?? null,
		valid: stats.valid,
		invalid: stats.invalid,
		errors: stats.errors,
		received: stats.received,
		events: stats.events,
		bytes: stats.bytes,
		events_by_name: stats.events_by_name,
		sent: stats.sent,
		steps_pending: opts.steps.length - step,
		event_seconds: seconds,
		events_per_s: stats.events > 1 && seconds > 0 ? stats.events / seconds : null,
	};
}

async function finish(reason) {
	if (finished) return;
	finished = true;
	clearTimeout(timer);
	const socket = ipc.of[id]?.socket;
	// ipc.disconnect destroys the socket, which would discard a command still in its write buffer.
	if (socket && !socket.destroyed && socket.writableLength > 0) {
		await new Promise((resolve) => {
			socket.once("drain", resolve);
			socket.once("close", resolve);
		});
	}
	try {
		ipc.disconnect(id);
	} catch {
		// already gone
	}
	stdoutLine(summary(reason));
	process.exitCode = reason === "timeout" ? 3 : 0;
	process.stdout.write("", () => process.exit());
}

const timer = setTimeout(() => finish("timeout"), opts.timeout * 1000);
process.on("SIGTERM", () => finish("signal"));
process.on("SIGINT", () => finish("signal"));

ipc.config.silent = true;
ipc.connectTo(id, opts.socket, () => {
	ipc.of[id]?.on("connect", onConnect);
	ipc.of[id]?.on("disconnect", onDisconnect);
	ipc.of[id]?.on("message", onMessage);
});

#!/usr/bin/env node
// A node-ipc 12.0.0 server shaped like Roo Code's IpcServer (packages/ipc/src/ipc-server.ts): the
// same singleton, the same config change (silent only), the same Ack, the same zod validation of every
// incoming frame. It stands in for the extension host in interop tests and benchmarks:
//
//   node roo_server.js --socket PATH                       count and validate commands, answer Get*
//   node roo_server.js --socket PATH --replay REC.jsonl    replay a recording of the real engine
//   node roo_server.js --socket PATH --stream N --size B   flood N partial `message` events
//
// stdout carries JSON lines only: {"listening": PATH} once ready, optional --trace lines, and one
// summary line ({"summary": true, valid, invalid, ...}) on CloseTask or SIGTERM/SIGINT, then exit.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const { performance } = require("node:perf_hooks");
const { parseArgs } = require("node:util");

const ipc = require("node-ipc").default;
const { ipcMessageSchema } = require("@roo-code/types");

const QUERY_RESPONSES = new Set(["commandsResponse", "modesResponse", "modelsResponse"]);

// Replies of the real 3.52.1 engine (recordings/queries-3.52.1.jsonl), used when no recording answers.
const CANNED_REPLIES = {
	GetModes: {
		eventName: "modesResponse",
		payload: [
			[
				{ slug: "architect", name: "🏗️ Architect" },
				{ slug: "code", name: "💻 Code" },
				{ slug: "ask", name: "❓ Ask" },
				{ slug: "debug", name: "🪲 Debug" },
				{ slug: "orchestrator", name: "🪃 Orchestrator" },
			],
		],
	},
	GetCommands: {
		eventName: "commandsResponse",
		payload: [
			[
				{
					name: "init",
					source: "built-in",
					filePath: "<built-in:init>",
					description: "Analyze codebase and create concise AGENTS.md files for AI assistants",
				},
			],
		],
	},
	GetModels: {
		eventName: "modelsResponse",
		payload: [
			{
				"stub/roo-model": {
					maxTokens: 8192,
					contextWindow: 128000,
					supportsImages: false,
					supportsPromptCache: false,
					inputPrice: 1,
					outputPrice: 2,
					description: "stub model",
				},
			},
		],
	},
};

function usage(message) {
	process.stderr.write(`roo_server.js: ${message}\n`);
	process.stderr.write(
		"usage: node roo_server.js --socket PATH [--replay FILE.jsonl [--time-scale F]] " +
			"[--stream N [--size BYTES]] [--trace]\n",
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
				replay: { type: "string" },
				"time-scale": { type: "string", default: "0" },
				stream: { type: "string" },
				size: { type: "string", default: "1024" },
				trace: { type: "boolean", default: false },
			},
		});
	} catch (err) {
		usage(err.message);
	}
	const v = parsed.values;
	const socket = v.socket ?? parsed.positionals[0];
	if (!socket) usage("--socket PATH is required");
	if (v.replay && v.stream) usage("--replay and --stream are exclusive");
	const timeScale = Number(v["time-scale"]);
	const stream = v.stream === undefined ? 0 : Number.parseInt(v.stream, 10);
	const size = Number.parseInt(v.size, 10);
	if (!(timeScale >= 0)) usage("--time-scale must be >= 0");
	if (!(stream >= 0) || !(size > 0)) usage("--stream and --size must be positive integers");
	return { socket, replay: v.replay, timeScale, stream, size, trace: v.trace };
}

const opts = options();

function out(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

const stats = {
	valid: 0,
	invalid: 0,
	bad_json: 0,
	errors: [],
	received: [],
	emitted: 0,
	connections: 0,
	firstEmit: 0,
	lastEmit: 0,
};

function noteEmit(count = 1) {
	const now = performance.now();
	if (stats.emitted === 0) stats.firstEmit = now;
	stats.emitted += count;
	stats.lastEmit = now;
}

function summary() {
	const seconds = (stats.lastEmit - stats.firstEmit) / 1000;
	return {
		summary: true,
		valid: stats.valid,
		invalid: stats.invalid,
		bad_json: stats.bad_json,
		errors: stats.errors,
		received: stats.received,
		emitted: stats.emitted,
		emit_seconds: seconds,
		emit_rate: stats.emitted > 1 && seconds > 0 ? stats.emitted / seconds : null,
		connections: stats.connections,
	};
}

// ------------------------------------------------------------------------------- the recording

// Each `out` frame of the recording owns the `in` TaskEvents up to the next `out`: what the engine
// sent in response (and in the background) before the client's next command.
function loadRecording(path) {
	const rows = fs
		.readFileSync(path, "utf8")
		.split("\n")
		.filter((line) => line.trim())
		.map((line) => JSON.parse(line));
	const segments = [];
	for (const row of rows) {
		if (row.dir === "out") {
			segments.push({ commandName: row.msg.data.commandName, t: row.t, events: [], used: false });
		} else if (row.dir === "in" && row.msg.type === "TaskEvent" && segments.length > 0) {
			segments[segments.length - 1].events.push(row);
		}
	}
	return segments;
}

const segments = opts.replay ? loadRecording(opts.replay) : [];

function takeSegment(commandName) {
	const segment = segments.find((s) => !s.used && s.commandName === commandName);
	if (segment) segment.used = true;
	return segment;
}

// ----------------------------------------------------------------------------------- the server

const clients = new Map(); // clientId -> socket, as in IpcServer

function liveSockets() {
	return (ipc.server.sockets || []).filter((s) => !s.destroyed);
}

// node-ipc's broadcast/emit drop socket.write's return value; the socket itself still tells whether
// its buffer is over the high-water mark, so wait for 'drain' there (or its close).
function drained(sockets) {
	const waits = [];
	for (const socket of sockets) {
		if (socket.destroyed || !socket.writableNeedDrain) continue;
		waits.push(
			new Promise((resolve) => {
				const done = () => {
					socket.off("drain", done);
					socket.off("close", done);
					resolve();
				};
				socket.on("drain", done);
				socket.on("close", done);
			}),
		);
	}
	return waits.length ? Promise.all(waits) : null;
}

function broadcast(message) {
	ipc.server.broadcast("message", message);
	noteEmit();
	return drained(liveSockets());
}

function sendTo(clientId, message) {
	const socket = clients.get(clientId);
	if (!socket) return null; // like IpcServer.send: unknown clientId is a silent no-op
	ipc.server.emit(socket, "message", message);
	noteEmit();
	return drained([socket]);
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));

async function replay(segment, clientId) {
	let previous = segment.t;
	for (const row of segment.events) {
		if (opts.timeScale > 0 && row.t > previous) await delay((row.t - previous) * opts.timeScale);
		previous = row.t;
		const wait = QUERY_RESPONSES.has(row.msg.data.eventName) ? sendTo(clientId, row.msg) : broadcast(row.msg);
		if (wait) await wait;
	}
}

function streamEvent(taskId, ts, text) {
	return {
		type: "TaskEvent",
		origin: "server",
		data: {
			eventName: "message",
			payload: [{ taskId, action: "updated", message: { ts, type: "say", say: "text", text, partial: true } }],
		},
	};
}

function statusEvent(eventName, taskId) {
	return { type: "TaskEvent", origin: "server", data: { eventName, payload: [taskId] } };
}

let streamed = false;

// taskCreated, taskStarted, N partial `message` updates of one ClineMessage, taskIdle: a task that
// streams one long answer (protocol section 7.8), at whatever rate the readers keep up with.
async function stream() {
	const taskId = crypto.randomUUID();
	const ts = Date.now();
	const pad = Math.max(1, opts.size - JSON.stringify({ type: "message", data: streamEvent(taskId, ts, "") }).length);
	const base = "x".repeat(pad);
	const sample = streamEvent(taskId, ts, base);
	const check = ipcMessageSchema.safeParse(sample);
	if (!check.success) throw new Error(`stream event fails ipcMessageSchema: ${JSON.stringify(check.error.issues)}`);

	for (const name of ["taskCreated", "taskStarted"]) {
		const wait = broadcast(statusEvent(name, taskId));
		if (wait) await wait;
	}
	const started = performance.now();
	for (let i = 0; i < opts.stream; i++) {
		const counter = String(i);
		const wait = broadcast(streamEvent(taskId, ts, counter + base.slice(counter.length)));
		if (wait) await wait;
		else if (i % 256 === 255) await yieldToLoop(); // let commands and signals in
	}
	const seconds = (performance.now() - started) / 1000;
	const wait = broadcast(statusEvent("taskIdle", taskId));
	if (wait) await wait;
	out({ streamed: opts.stream, size: opts.size, seconds, emit_rate: seconds > 0 ? opts.stream / seconds : null });
}

// Commands are handled one at a time so that replayed segments never interleave.
let queue = Promise.resolve();

function onCommand(clientId, command) {
	stats.received.push(command.commandName);
	queue = queue
		.then(() => handleCommand(clientId, command))
		.catch((err) => {
			stats.errors.push({ handler: String(err && err.stack ? err.stack : err) });
		});
}

async function handleCommand(clientId, command) {
	const name = command.commandName;
	const segment = takeSegment(name);
	if (segment) {
		await replay(segment, clientId);
	} else if (CANNED_REPLIES[name]) {
		const wait = sendTo(clientId, { type: "TaskEvent", origin: "server", data: CANNED_REPLIES[name] });
		if (wait) await wait;
	} else if (name === "StartNewTask" && opts.stream > 0 && !streamed) {
		streamed = true;
		await stream();
	}
	if (name === "CloseTask") await shutdown(); // VS Code closes the window: the socket drops
}

function onConnect(socket) {
	const clientId = crypto.randomBytes(6).toString("hex");
	clients.set(clientId, socket);
	stats.connections++;
	if (opts.trace) {
		// Registered after node-ipc's own 'data' listener, so ipcBuffer shows what it is holding back.
		socket.on("data", (chunk) => {
			out({ chunk: Buffer.byteLength(chunk, "utf8"), pending: Buffer.byteLength(socket.ipcBuffer || "", "utf8") });
		});
	}
	ipc.server.emit(socket, "message", {
		type: "Ack",
		origin: "server",
		data: { clientId, pid: process.pid, ppid: process.ppid },
	});
}

function onDisconnect(socket) {
	for (const [clientId, s] of clients.entries()) {
		if (s === socket) {
			clients.delete(clientId);
			break;
		}
	}
}

function onMessage(data) {
	if (typeof data !== "object") {
		stats.invalid++;
		stats.errors.push({ issues: "not an object", data: JSON.stringify(data).slice(0, 500) });
		return;
	}
	const result = ipcMessageSchema.safeParse(data);
	if (opts.trace) out({ frame: data, valid: result.success, parsed: result.success ? result.data : null });
	if (!result.success) {
		stats.invalid++;
		stats.errors.push({ issues: result.error.issues, data: JSON.stringify(data).slice(0, 500) });
		return;
	}
	stats.valid++;
	const payload = result.data;
	if (payload.origin === "client" && payload.type === "TaskCommand") onCommand(payload.clientId, payload.data);
}

// Observation only: Roo registers no 'error' handler, so bad JSON is dropped either way.
function onError(err) {
	if (err && err.message === "Invalid JSON response format") stats.bad_json++;
	else stats.errors.push({ error: String(err && err.message ? err.message : err) });
}

let closing = false;

async function shutdown() {
	if (closing) return;
	closing = true;
	out(summary());
	const sockets = liveSockets();
	const wait = drained(sockets);
	if (wait) await Promise.race([wait, delay(2000)]);
	const closed = sockets.map((s) => new Promise((resolve) => (s.destroyed ? resolve() : s.once("close", resolve))));
	for (const s of sockets) s.end();
	try {
		ipc.server.stop();
	} catch {
		// not listening yet
	}
	await Promise.race([Promise.all(closed), delay(2000)]);
	// A pipe takes process.stdout writes asynchronously: exit only once the summary is flushed,
	// or a long one (more than the 64 KiB pipe buffer) arrives cut short.
	process.stdout.write("", () => process.exit(0));
}

process.on("SIGTERM", () => shutdown());
process.on("SIGINT", () => shutdown());

ipc.config.silent = true;
ipc.serve(opts.socket, () => {
	ipc.server.on("connect", onConnect);
	ipc.server.on("socket.disconnected", onDisconnect);
	ipc.server.on("message", onMessage);
	ipc.server.on("error", onError);
	out({ listening: opts.socket, pid: process.pid });
});
ipc.server.start();

#!/usr/bin/env node
// Command round trip over node-ipc alone, the anchor of benchmarks/bridge_throughput.py: a client shaped
// like Roo Code's IpcClient (the node-ipc singleton, silent config, the Ack's clientId on every command)
// sends a Get* command to roo_server.js and awaits its response event, COUNT times, one at a time.
//
//   node bench_rtt.js --socket PATH [--count 2000] [--warmup 200] [--command GetModes]
//
// Round trips alternate between two receive paths, so that both see the same conditions: "validated"
// runs ipcMessageSchema.safeParse on the response as Roo's IpcClient does, "raw" skips it (the cost of
// node-ipc and the socket alone). stdout gets one JSON line:
//   {"summary": true, "count", "invalid", "validated": {stats}, "raw": {stats}}
// where stats = {n, p50_us, p90_us, p99_us, mean_us, min_us, max_us}. Exit 3 on --timeout.
"use strict";

const crypto = require("node:crypto");
const { parseArgs } = require("node:util");

const ipc = require("node-ipc").default;
const { ipcMessageSchema } = require("@roo-code/types");

const RESPONSES = { GetModes: "modesResponse", GetCommands: "commandsResponse", GetModels: "modelsResponse" };

function usage(message) {
	process.stderr.write(`bench_rtt.js: ${message}\n`);
	process.stderr.write(
		"usage: node bench_rtt.js --socket PATH [--count N] [--warmup N] [--command GetModes] [--timeout S]\n",
	);
	process.exit(2);
}

function options() {
	let parsed;
	try {
		parsed = parseArgs({
			options: {
				socket: { type: "string" },
				count: { type: "string", default: "2000" },
				warmup: { type: "string", default: "200" },
				command: { type: "string", default: "GetModes" },
				timeout: { type: "string", default: "60" },
			},
		});
	} catch (err) {
		usage(err.message);
	}
	const v = parsed.values;
	if (!v.socket) usage("--socket PATH is required");
	const count = Number.parseInt(v.count, 10);
	const warmup = Number.parseInt(v.warmup, 10);
	const timeout = Number(v.timeout);
	if (!(count > 0) || !(warmup >= 0) || !(timeout > 0)) usage("bad --count, --warmup or --timeout");
	if (!RESPONSES[v.command]) usage(`--command must be one of ${Object.keys(RESPONSES).join(", ")}`);
	return { socket: v.socket, count, warmup, command: v.command, response: RESPONSES[v.command], timeout };
}

const opts = options();

function stats(samples) {
	const sorted = Float64Array.from(samples).sort();
	const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
	const sum = sorted.reduce((a, b) => a + b, 0);
	return {
		n: sorted.length,
		p50_us: at(0.5),
		p90_us: at(0.9),
		p99_us: at(0.99),
		mean_us: sum / sorted.length,
		min_us: sorted[0],
		max_us: sorted[sorted.length - 1],
	};
}

const id = `roo-code-evals-${crypto.randomBytes(6).toString("hex")}`;
const samples = { validated: [], raw: [] };
let clientId;
let invalid = 0;
let done = 0; // round trips completed, warmup included
let sentAt = 0n;

function mode() {
	return done % 2 === 0 ? "validated" : "raw";
}

function send() {
	sentAt = process.hrtime.bigint();
	ipc.of[id].emit("message", { type: "TaskCommand", origin: "client", clientId, data: { commandName: opts.command } });
}

function onMessage(data) {
	const current = mode();
	let message = data;
	if (clientId === undefined || current === "validated") {
		const result = ipcMessageSchema.safeParse(data);
		if (!result.success) {
			invalid++;
			return;
		}
		message = result.data;
	}
	if (message.origin !== "server") return;
	if (message.type === "Ack") {
		clientId = message.data.clientId;
		send();
		return;
	}
	if (message.type !== "TaskEvent" || message.data.eventName !== opts.response) return;
	const micros = Number(process.hrtime.bigint() - sentAt) / 1000;
	if (done >= opts.warmup) samples[current].push(micros);
	done++;
	if (done < opts.warmup + opts.count) send();
	else finish(0);
}

let finished = false;

function finish(code) {
	if (finished) return;
	finished = true;
	clearTimeout(timer);
	try {
		ipc.disconnect(id);
	} catch {
		// already gone
	}
	const summary = { summary: true, count: done - opts.warmup, invalid, command: opts.command };
	for (const key of Object.keys(samples)) summary[key] = samples[key].length ? stats(samples[key]) : null;
	process.stdout.write(JSON.stringify(summary) + "\n", () => process.exit(code));
}

const timer = setTimeout(() => finish(3), opts.timeout * 1000);
process.on("SIGTERM", () => finish(1));
process.on("SIGINT", () => finish(1));

ipc.config.silent = true;
ipc.connectTo(id, opts.socket, () => {
	ipc.of[id].on("message", onMessage);
});

// relay's plugin for OpenCode (opencode-ai). Written by `relay install opencode` into
// ~/.config/opencode/plugin/relay.ts (or a project's .opencode/plugin/), beside relay's MCP
// entry in opencode.json; removed by `relay uninstall opencode`. Source:
// agents/opencode/relay.ts in relay's repository, embedded in the relay binary, which fills
// in RELAY below. relay replaces or removes a file whose first line is this one (backing
// it up first), and never another.
//
// Every decision is the relay binary's: this file passes OpenCode's session events to
// `relay hook opencode <event>` (the JSON payload Claude Code's hooks get, the JSON they
// print), names the calling session in each relay tool call (OpenCode tells MCP servers
// nothing about sessions, and one OpenCode process serves many), and gives the session's
// shell its identity. See docs/agents.md, "OpenCode".
//
// OpenCode calls every export of a plugin module as a plugin: only the plugin is exported.

import type { Plugin } from "@opencode-ai/plugin";
import { type ChildProcess, spawn } from "node:child_process";

/** The relay binary (absolute path, filled in at install). */
const RELAY: string = "@RELAY@";

/** Longest a hook may run (relay's hooks answer in milliseconds; this bounds a stuck store). */
const HOOK_TIMEOUT_MS = 10_000;
/** Longest the post-tool-use hook may run: it runs after every tool call. */
const TOOL_HOOK_TIMEOUT_MS = 5_000;
/** The idle waiter's exit status when it wrote mail to inject (relay's EXIT_WAKE). */
const EXIT_WAKE = 2;
/** The argument naming the calling session in relay tool calls (relay's SESSION_ARG). */
const SESSION_ARG = "_relay_session";

type Json = Record<string, any>;

interface Ran {
	code: number | null;
	stdout: string;
	stderr: string;
}

/** Runs `relay <args>` with `input` on stdin; never rejects (a spawn failure is code null). */
function run(args: string[], input: string, timeoutMs: number): Promise<Ran> {
	return new Promise((resolve) => {
		const out: Buffer[] = [];
		const err: Buffer[] = [];
		let done = false;
		let child: ChildProcess | undefined;
		const finish = (code: number | null, extra?: string) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			let stderr = Buffer.concat(err).toString("utf8");
			if (extra) stderr += extra;
			resolve({ code, stdout: Buffer.concat(out).toString("utf8"), stderr });
		};
		const timer = setTimeout(() => {
			child?.kill("SIGKILL");
			finish(null, `relay ${args.join(" ")} ran past ${timeoutMs} ms`);
		}, timeoutMs);
		try {
			child = spawn(RELAY, args, { stdio: ["pipe", "pipe", "pipe"] });
		} catch (e) {
			finish(null, `cannot run ${RELAY}: ${e}`);
			return;
		}
		child.stdout?.on("data", (b: Buffer) => out.push(b));
		child.stderr?.on("data", (b: Buffer) => err.push(b));
		child.on("error", (e) => finish(null, `cannot run ${RELAY}: ${e.message}`));
		child.on("close", (code) => finish(code));
		child.stdin?.on("error", () => {});
		child.stdin?.end(input);
	});
}

/** A hook's `additionalContext`, if it printed one. */
function contextOf(out: Json | null): string {
	const text = out?.hookSpecificOutput?.additionalContext;
	return typeof text === "string" ? text : "";
}

// A message's parts go to the model in id order ("prt_" + 12 hex digits of time and
// counter + 14 letters): an added part needs an id after every other part's.
const B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
function nextPartId(parts: { id?: string }[]): string {
	const ids = parts
		.map((p) => p.id)
		.filter((i): i is string => typeof i === "string" && /^prt_[0-9a-f]{12}/.test(i))
		.sort();
	const last = ids.length ? BigInt(`0x${ids[ids.length - 1].slice(4, 16)}`) : BigInt(Date.now()) * 0x1000n;
	const n = (last + 1n) & 0xffffffffffffn;
	let tail = "";
	for (let i = 0; i < 14; i++) tail += B62[Math.floor(Math.random() * 62)];
	return `prt_${n.toString(16).padStart(12, "0")}${tail}`;
}

interface Session {
	/** The session-start hook, run once per session and process. */
	started?: Promise<void>;
	/** Its text, put into the context with the first prompt. */
	intro: string;
	/** True while a turn runs because the stop hook kept the session working. */
	continuing: boolean;
	waiter?: ChildProcess;
}

export const RelayPlugin: Plugin = async ({ client, directory }) => {
	const sessions = new Map<string, Session>();
	/** Subagent sessions (a parent's task tool) → their parent: part of it, not endpoints. */
	const children = new Map<string, string>();
	// `opencode run` ends at the first idle: a prompt queued then is never answered, so it
	// neither keeps working for mail nor waits for it (the mail waits for the next run).
	const interactive = !process.argv.slice(1).includes("run");

	const warn = (text: string) => {
		// The TUI owns the terminal: OpenCode's log, not stderr.
		client.app
			?.log?.({ body: { service: "relay", level: "warn", message: text } })
			?.catch?.(() => {});
	};

	const of = (id: string): Session => {
		let s = sessions.get(id);
		if (!s) {
			s = { intro: "", continuing: false };
			sessions.set(id, s);
		}
		return s;
	};

	const hook = async (
		id: string,
		event: string,
		name: string,
		extra: Json = {},
		timeoutMs = HOOK_TIMEOUT_MS,
	): Promise<Json | null> => {
		const payload = { session_id: id, cwd: directory, hook_event_name: name, ...extra };
		const r = await run(["hook", "opencode", event], JSON.stringify(payload), timeoutMs);
		if (r.stderr.trim()) warn(r.stderr.trim().split("\n").slice(-1)[0]);
		if (!r.stdout.trim()) return null;
		try {
			return JSON.parse(r.stdout);
		} catch {
			warn(`relay hook opencode ${event} printed something that is not JSON`);
			return null;
		}
	};

	const start = (id: string): Promise<void> => {
		const s = of(id);
		s.started ??= hook(id, "session-start", "SessionStart", { source: "startup" }).then((out) => {
			s.intro = contextOf(out);
		});
		return s.started;
	};

	// A new turn in the session with `text` as the user's message (queued by OpenCode when
	// a turn runs).
	const prompt = async (id: string, text: string) => {
		try {
			const r: any = await client.session.promptAsync({ path: { id }, body: { parts: [{ type: "text", text }] } });
			if (r?.error) warn(`cannot prompt session ${id}: ${JSON.stringify(r.error)}`);
		} catch (e) {
			warn(`cannot prompt session ${id}: ${e}`);
		}
	};

	const stopWaiter = (id: string) => {
		const s = sessions.get(id);
		const w = s?.waiter;
		if (s) s.waiter = undefined;
		w?.kill("SIGTERM");
	};

	// The idle waiter (route inject): `relay hook opencode idle` blocks on the session's
	// doorbell and exits 2 with the fenced mail on stderr when mail comes; that becomes a
	// turn. One per session: relay stops the one before it.
	const startWaiter = (id: string) => {
		stopWaiter(id);
		const s = of(id);
		let child: ChildProcess;
		try {
			child = spawn(RELAY, ["hook", "opencode", "idle"], {
				stdio: ["pipe", "ignore", "pipe"],
				// This plugin decides where waiting makes sense (not `opencode run`).
				env: { ...process.env, RELAY_IDLE: process.env.RELAY_IDLE || "always" },
			});
		} catch (e) {
			warn(`cannot start the idle waiter: ${e}`);
			return;
		}
		s.waiter = child;
		const err: Buffer[] = [];
		child.stderr?.on("data", (b: Buffer) => err.push(b));
		child.on("error", () => {});
		child.stdin?.on("error", () => {});
		child.stdin?.end(JSON.stringify({ session_id: id, cwd: directory, hook_event_name: "Stop" }));
		child.on("close", (code) => {
			if (s.waiter === child) s.waiter = undefined;
			const text = Buffer.concat(err).toString("utf8");
			// Mail the waiter took is this session's even when it was being stopped.
			if (code === EXIT_WAKE && text.trim()) void prompt(id, text);
			else if (code !== 0 && code !== null && text.trim()) warn(text.trim().split("\n").slice(-1)[0]);
		});
	};

	// The session went idle: pending mail keeps it working once (relay's stop hook decides
	// and remembers), else the waiter takes over.
	const idle = async (id: string) => {
		if (!interactive || children.has(id)) return;
		await start(id);
		const s = of(id);
		const active = s.continuing;
		s.continuing = false;
		const out = await hook(id, "stop", "Stop", { stop_hook_active: active });
		if (out?.decision === "block" && typeof out.reason === "string") {
			s.continuing = true;
			await prompt(id, out.reason);
			return;
		}
		startWaiter(id);
	};

	return {
		event: async ({ event }) => {
			const e = event as Json;
			if (e.type !== "session.idle" && e.type !== "session.created" && e.type !== "session.deleted") return;
			const id = e.properties?.sessionID ?? e.properties?.info?.id;
			if (typeof id !== "string") return;
			const parent = e.properties?.info?.parentID;
			if (e.type === "session.created" && typeof parent === "string") children.set(id, children.get(parent) ?? parent);
			else if (e.type === "session.deleted") {
				stopWaiter(id);
				sessions.delete(id);
			} else if (e.type === "session.idle") await idle(id);
		},

		// Before each prompt (typed, or a turn relay started): the intro once, and new mail.
		"chat.message": async (input, output) => {
			const id = input.sessionID;
			if (children.has(id)) return;
			stopWaiter(id);
			await start(id);
			const s = of(id);
			const out = await hook(id, "user-prompt-submit", "UserPromptSubmit");
			const text = [s.intro, contextOf(out)].filter((t) => t).join("\n\n");
			s.intro = "";
			if (!text) return;
			const parts = output.parts as Json[];
			parts.push({
				id: nextPartId(parts),
				sessionID: id,
				messageID: (output.message as Json).id,
				type: "text",
				text,
				synthetic: true,
			});
		},

		// relay tool calls say which session calls.
		"tool.execute.before": async (input, output) => {
			if (!input.tool.startsWith("relay_")) return;
			const args = output.args as Json | undefined;
			if (args && typeof args === "object") args[SESSION_ARG] = children.get(input.sessionID) ?? input.sessionID;
		},

		// Between tool calls: mail that came while the session works, after the tool's result.
		"tool.execute.after": async (input, output) => {
			if (children.has(input.sessionID)) return;
			const out = await hook(
				input.sessionID,
				"post-tool-use",
				"PostToolUse",
				{ tool_name: input.tool },
				TOOL_HOOK_TIMEOUT_MS,
			);
			const text = contextOf(out);
			if (!text) return;
			const o = output as Json;
			// An MCP tool's output is its raw result; a built-in tool's is text.
			if (Array.isArray(o.content)) o.content.push({ type: "text", text: `\n\n${text}` });
			else if (typeof o.output === "string") o.output += `\n\n${text}`;
		},

		// `relay` commands the session's shell runs act as the session (a subagent's as its
		// parent's).
		"shell.env": async (input, output) => {
			if (input.sessionID) output.env.RELAY_AS = children.get(input.sessionID) ?? input.sessionID;
		},
	};
};

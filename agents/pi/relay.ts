// relay's extension for pi (@mariozechner/pi-coding-agent). Written by `relay install pi`
// into ~/.pi/agent/extensions/relay.ts (or a project's .pi/extensions/), removed by
// `relay uninstall pi`. Source: agents/pi/relay.ts in relay's repository, embedded in the
// relay binary, which fills in RELAY below. relay replaces or removes a file whose first
// line is this one (backing it up first), and never another.
//
// Every decision is the relay binary's: this file only passes pi's session events to
// `relay hook pi <event>` (the JSON payload Claude Code's hooks get, the JSON they print)
// and relay's tools through to `relay mcp` (the MCP tool list, so names, descriptions,
// schemas and errors are the MCP server's own). See docs/agents.md, "pi".
//
// pi refuses to start when an extension fails to load or its factory throws, so nothing
// here may throw outside a handler: a missing relay binary means no relay tools and one
// warning, never a broken pi.

import type { ExtensionAPI, ExtensionContext } from "@mariozechner/pi-coding-agent";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";

/** The relay binary (absolute path, filled in at install). */
const RELAY: string = "@RELAY@";

/** Longest a hook may run (relay's hooks answer in milliseconds; this bounds a stuck store). */
const HOOK_TIMEOUT_MS = 10_000;
/** Longest the post-tool-use hook may run: it runs after every tool call. */
const TOOL_HOOK_TIMEOUT_MS = 5_000;
/** Longest the stop hook may run: it runs synchronously, and pi's UI waits for it. */
const STOP_HOOK_TIMEOUT_MS = 3_000;
/** Longest reading relay's tool list at start-up may take. */
const LIST_TIMEOUT_MS = 10_000;
/** The idle waiter's exit status when it wrote mail to inject (relay's EXIT_WAKE). */
const EXIT_WAKE = 2;

type Json = Record<string, any>;

interface Ran {
	code: number | null;
	stdout: string;
	stderr: string;
}

/** Runs `relay <args>` with `input` on stdin; never rejects (a spawn failure is code null). */
function run(args: string[], input: string, timeoutMs: number, signal?: AbortSignal): Promise<Ran> {
	return new Promise((resolve) => {
		const out: Buffer[] = [];
		const err: Buffer[] = [];
		let done = false;
		let child: ChildProcess;
		const finish = (code: number | null, extra?: string) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			signal?.removeEventListener("abort", abort);
			let stderr = Buffer.concat(err).toString("utf8");
			if (extra) stderr += extra;
			resolve({ code, stdout: Buffer.concat(out).toString("utf8"), stderr });
		};
		const abort = () => child?.kill("SIGTERM");
		const timer = setTimeout(() => {
			child?.kill("SIGKILL");
			finish(null, `relay ${args.join(" ")} ran past ${timeoutMs} ms`);
		}, timeoutMs);
		timer.unref?.();
		try {
			child = spawn(RELAY, args, { stdio: ["pipe", "pipe", "pipe"] });
		} catch (e) {
			finish(null, `cannot run ${RELAY}: ${e}`);
			return;
		}
		signal?.addEventListener("abort", abort, { once: true });
		child.stdout?.on("data", (b: Buffer) => out.push(b));
		child.stderr?.on("data", (b: Buffer) => err.push(b));
		child.on("error", (e) => finish(null, `cannot run ${RELAY}: ${e.message}`));
		child.on("close", (code) => finish(code));
		child.stdin?.on("error", () => {});
		child.stdin?.end(input);
	});
}

/**
 * One MCP exchange with a `relay mcp` of its own: initialize, then `method` with `params`;
 * the result (or a thrown Error with the server's message). `relay mcp` is a child of this
 * pi process, so it finds the session through the binding the session-start hook made.
 */
async function mcp(method: string, params: Json, timeoutMs: number, signal?: AbortSignal): Promise<Json> {
	return new Promise((resolve, reject) => {
		let child: ChildProcess;
		let buf = "";
		let done = false;
		let stderr = "";
		const finish = (f: () => void) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			signal?.removeEventListener("abort", abort);
			child?.stdin?.end();
			f();
		};
		const abort = () => {
			child?.kill("SIGTERM");
			finish(() => reject(new Error("cancelled")));
		};
		const timer = setTimeout(() => {
			child?.kill("SIGKILL");
			finish(() => reject(new Error(`relay mcp gave no answer in ${timeoutMs} ms`)));
		}, timeoutMs);
		timer.unref?.();
		try {
			child = spawn(RELAY, ["mcp"], { stdio: ["pipe", "pipe", "pipe"] });
		} catch (e) {
			finish(() => reject(new Error(`cannot run ${RELAY}: ${e}`)));
			return;
		}
		signal?.addEventListener("abort", abort, { once: true });
		child.on("error", (e) => finish(() => reject(new Error(`cannot run ${RELAY}: ${e.message}`))));
		child.on("close", (code) =>
			finish(() => reject(new Error(`relay mcp exited (${code}) without an answer: ${stderr.trim()}`))),
		);
		child.stderr?.on("data", (b: Buffer) => {
			stderr = (stderr + b.toString("utf8")).slice(-4096);
		});
		child.stdin?.on("error", () => {});
		child.stdout?.on("data", (b: Buffer) => {
			buf += b.toString("utf8");
			let nl: number;
			while ((nl = buf.indexOf("\n")) >= 0) {
				const line = buf.slice(0, nl);
				buf = buf.slice(nl + 1);
				let msg: Json;
				try {
					msg = JSON.parse(line);
				} catch {
					continue;
				}
				if (msg.id !== 2) continue;
				if (msg.error) finish(() => reject(new Error(String(msg.error.message ?? "relay mcp error"))));
				else finish(() => resolve(msg.result ?? {}));
			}
		});
		const send = (m: Json) => child.stdin?.write(`${JSON.stringify(m)}\n`);
		send({
			jsonrpc: "2.0",
			id: 1,
			method: "initialize",
			params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "pi", version: "relay-extension" } },
		});
		send({ jsonrpc: "2.0", method: "notifications/initialized" });
		send({ jsonrpc: "2.0", id: 2, method, params });
	});
}

/** The text of an MCP tool result's content. */
function textOf(result: Json): string {
	const parts = Array.isArray(result.content) ? result.content : [];
	return parts
		.filter((p: Json) => p?.type === "text" && typeof p.text === "string")
		.map((p: Json) => p.text)
		.join("\n");
}

/** A hook's `additionalContext`, if it printed one. */
function contextOf(out: Json | null): string {
	const text = out?.hookSpecificOutput?.additionalContext;
	return typeof text === "string" ? text : "";
}

export default async function relay(pi: ExtensionAPI) {
	const session = {
		id: "",
		cwd: "",
		file: "" as string | undefined,
		/** The session-start hook's text, put into the context before the first prompt. */
		intro: "",
		/** True while a turn runs because the stop hook kept the session working. */
		continuing: false,
		waiter: undefined as ChildProcess | undefined,
		ui: false,
	};
	let trouble = "";

	const warn = (ctx: ExtensionContext | undefined, text: string) => {
		try {
			if (ctx?.hasUI) ctx.ui.notify(`relay: ${text}`, "warning");
			else console.error(`relay: ${text}`);
		} catch {
			// A stale context after /new: nothing to tell.
		}
	};

	const hook = async (
		ctx: ExtensionContext,
		event: string,
		name: string,
		extra: Json = {},
		timeoutMs = HOOK_TIMEOUT_MS,
	): Promise<Json | null> => {
		if (!session.id) return null;
		const payload = {
			session_id: session.id,
			cwd: session.cwd,
			transcript_path: session.file,
			hook_event_name: name,
			...extra,
		};
		const r = await run(["hook", "pi", event], JSON.stringify(payload), timeoutMs);
		if (r.stderr.trim()) warn(ctx, r.stderr.trim().split("\n").slice(-1)[0]);
		if (!r.stdout.trim()) return null;
		try {
			return JSON.parse(r.stdout);
		} catch {
			warn(ctx, `relay hook pi ${event} printed something that is not JSON`);
			return null;
		}
	};

	// The stop hook, run synchronously: pi picks up a follow-up only when it is queued
	// before its loop looks for one, right after the final turn ends (queued later, in
	// agent_end, it waits for the user's next prompt, and `pi -p` exits without it).
	const stopHook = (ctx: ExtensionContext, active: boolean): Json | null => {
		if (!session.id) return null;
		const payload = {
			session_id: session.id,
			cwd: session.cwd,
			transcript_path: session.file,
			hook_event_name: "Stop",
			stop_hook_active: active,
		};
		let r;
		try {
			r = spawnSync(RELAY, ["hook", "pi", "stop"], {
				input: JSON.stringify(payload),
				timeout: STOP_HOOK_TIMEOUT_MS,
				encoding: "utf8",
			});
		} catch (e) {
			warn(ctx, `cannot run ${RELAY}: ${e}`);
			return null;
		}
		if (r.error) warn(ctx, `cannot run ${RELAY}: ${r.error.message}`);
		if (r.stderr?.trim()) warn(ctx, r.stderr.trim().split("\n").slice(-1)[0]);
		if (!r.stdout?.trim()) return null;
		try {
			return JSON.parse(r.stdout);
		} catch {
			warn(ctx, "relay hook pi stop printed something that is not JSON");
			return null;
		}
	};

	// Delivers text as the user's next message: a new turn when pi is idle, else a
	// follow-up once the running turn ends (pi drops a plain send while it works).
	// (pi ignores deliverAs when idle; passing it always covers a prompt that is starting,
	// when pi still reports idle but refuses a plain send.)
	const deliver = (ctx: ExtensionContext, text: string) => {
		try {
			pi.sendUserMessage(text, { deliverAs: "followUp" });
		} catch (e) {
			warn(ctx, `cannot hand mail to the session: ${e}`);
		}
	};

	const stopWaiter = () => {
		const w = session.waiter;
		session.waiter = undefined;
		w?.kill("SIGTERM");
	};

	// The idle waiter (route inject): `relay hook pi idle` blocks on the session's doorbell
	// and exits 2 with the fenced mail on stderr when mail comes; that becomes a turn. One
	// per session: relay stops the one before it.
	const startWaiter = (ctx: ExtensionContext) => {
		stopWaiter();
		if (!session.ui || !session.id) return;
		const id = session.id;
		let child: ChildProcess;
		try {
			child = spawn(RELAY, ["hook", "pi", "idle"], {
				stdio: ["pipe", "ignore", "pipe"],
				// pi renames its process, so relay cannot read `-p` off its command line:
				// the waiter runs only where this extension sees a UI, and waits there.
				env: { ...process.env, RELAY_IDLE: process.env.RELAY_IDLE || "always" },
			});
		} catch (e) {
			warn(ctx, `cannot start the idle waiter: ${e}`);
			return;
		}
		session.waiter = child;
		const err: Buffer[] = [];
		child.stderr?.on("data", (b: Buffer) => err.push(b));
		child.on("error", () => {});
		child.stdin?.on("error", () => {});
		child.stdin?.end(JSON.stringify({ session_id: id, cwd: session.cwd, hook_event_name: "Stop" }));
		child.on("close", (code) => {
			if (session.waiter === child) session.waiter = undefined;
			const text = Buffer.concat(err).toString("utf8");
			// Mail the waiter took is this session's even when it was being stopped.
			if (code === EXIT_WAKE && text.trim() && session.id === id) deliver(ctx, text);
			else if (code !== 0 && code !== null && text.trim()) warn(ctx, text.trim().split("\n").slice(-1)[0]);
		});
	};

	// relay's tools, as `relay mcp` lists them.
	try {
		const listed = await mcp("tools/list", {}, LIST_TIMEOUT_MS);
		for (const t of Array.isArray(listed.tools) ? listed.tools : []) {
			if (typeof t?.name !== "string") continue;
			const name: string = t.name;
			pi.registerTool({
				// Prefixed: pi refuses to start when two extensions register one name, and
				// `search` or `status` are names others use too.
				name: `relay_${name}`,
				label: `relay ${name}`,
				description: String(t.description ?? ""),
				parameters: t.inputSchema ?? { type: "object", properties: {} },
				async execute(_id: string, params: unknown, signal: AbortSignal | undefined) {
					const result = await mcp(
						"tools/call",
						{ name, arguments: params ?? {} },
						// `wait` blocks up to its own cap; this only bounds a hung server.
						15 * 60_000,
						signal,
					);
					const text = textOf(result);
					if (result.isError) throw new Error(text || `relay ${name} failed`);
					return { content: [{ type: "text", text }], details: result.structuredContent ?? {} };
				},
			} as any);
		}
	} catch (e) {
		trouble = `no relay tools: ${e instanceof Error ? e.message : e} (run \`relay doctor\`)`;
	}

	pi.on("session_start", async (event, ctx) => {
		session.id = ctx.sessionManager.getSessionId();
		session.cwd = ctx.cwd;
		session.file = ctx.sessionManager.getSessionFile();
		session.ui = ctx.hasUI;
		session.continuing = false;
		if (trouble) warn(ctx, trouble);
		const out = await hook(ctx, "session-start", "SessionStart", { source: event.reason });
		session.intro = contextOf(out);
		startWaiter(ctx);
	});

	pi.on("session_shutdown", async () => {
		stopWaiter();
		session.id = "";
	});

	// Before each prompt (typed, or a turn relay started): the intro once, and new mail.
	pi.on("before_agent_start", async (_event, ctx) => {
		stopWaiter();
		const out = await hook(ctx, "user-prompt-submit", "UserPromptSubmit");
		const text = [session.intro, contextOf(out)].filter((t) => t).join("\n\n");
		session.intro = "";
		if (!text) return;
		return { message: { customType: "relay", content: text, display: true } };
	});

	// Between tool calls: mail that came while the session works, after the tool's result.
	pi.on("tool_result", async (event, ctx) => {
		const out = await hook(ctx, "post-tool-use", "PostToolUse", { tool_name: event.toolName }, TOOL_HOOK_TIMEOUT_MS);
		const text = contextOf(out);
		if (!text) return;
		return { content: [...(event.content ?? []), { type: "text", text: `\n\n${text}` }] };
	});

	// About to go idle (the model answered without a tool call): pending mail keeps the
	// session working once, as a follow-up in the same run (relay's stop hook decides and
	// remembers; `continuing` is the hook's stop_hook_active).
	pi.on("turn_end", (event, ctx) => {
		const m = event.message as Json | undefined;
		if (m?.role !== "assistant" || m.stopReason !== "stop") return;
		const active = session.continuing;
		session.continuing = false;
		const out = stopHook(ctx, active);
		if (out?.decision !== "block" || typeof out.reason !== "string") return;
		session.continuing = true;
		try {
			// Queued at once (a user message may be queued only after an await).
			pi.sendMessage({ customType: "relay", content: out.reason, display: true }, { deliverAs: "followUp" });
		} catch (e) {
			warn(ctx, `cannot hand mail to the session: ${e}`);
		}
	});

	// Idle: the waiter takes over.
	pi.on("agent_end", async (_event, ctx) => {
		startWaiter(ctx);
	});
}

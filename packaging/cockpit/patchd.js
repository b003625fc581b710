/* patchd's Cockpit page. Everything goes over patchd's D-Bus API, as patchctl uses it:
 * reads are open, every change is authorized by polkit for the logged-in user (or for
 * root when Cockpit's administrative access is on: superuser "try"). Which buttons are
 * enabled comes from the daemon's own answer (GetAuthorizations: polkit asked for this
 * connection, without a prompt), so the page and the calls agree on the same rules.
 * Live values come from PropertiesChanged and JobFinished, not from polling. */
"use strict";

(function () {
    const NAME = "org.patchd.Patchd1";
    const PATH = "/org/patchd/Patchd1";
    const IFACE = "org.patchd.Patchd1.Manager";

    let client = null;
    let rights = {};
    let status = null;
    let refreshing = null;
    let refreshAgain = false;

    function $(id) { return document.getElementById(id); }

    function text(el, value) {
        el.textContent = value === undefined || value === null || value === "" ? "—" : String(value);
    }

    function when(ts) {
        if (!ts)
            return "";
        const d = new Date(ts);
        return isNaN(d.getTime()) ? ts : d.toLocaleString() + " (" + ts + ")";
    }

    function node(tag, cls, content) {
        const el = document.createElement(tag);
        if (cls)
            el.className = cls;
        if (content !== undefined)
            el.textContent = content;
        return el;
    }

    /* --- messages ------------------------------------------------------------------ */

    function show(kind, title, detail) {
        const box = $("message");
        box.className = "pf-v5-c-alert pf-m-inline pf-m-" + kind;
        box.dataset.kind = kind;
        $("message-title").textContent = title;
        $("message-text").textContent = detail || "";
        box.hidden = false;
    }

    /* The daemon's error names say what happened; the message is its own words. */
    function explain(what, err) {
        const name = (err && err.name) || "";
        const msg = (err && (err.message || err.problem)) || String(err);
        if (name.endsWith(".NotAuthorized"))
            show("danger", "Not authorized to " + what, msg);
        else if (name.endsWith(".Refused"))
            show("warning", "Not now: " + what, msg);
        else if (name.endsWith(".Busy"))
            show("warning", "Busy", msg);
        else if (name.endsWith(".NotFound"))
            show("info", "Nothing to " + what, msg);
        else
            show("danger", "Could not " + what, msg);
    }

    function call(method, args, signature) {
        return client.call(PATH, IFACE, method, args || [], { type: signature || "" });
    }

    /* A mutating call from a button: its outcome is always said on the page. */
    function act(what, method, args, signature, done) {
        return call(method, args, signature)
            .then(function (reply) {
                show("success", done || (what.charAt(0).toUpperCase() + what.slice(1) + ": done"), "");
                refresh();
                return reply;
            })
            .catch(function (err) { explain(what, err); });
    }

    /* --- rights -------------------------------------------------------------------- */

    /* Buttons that only make sense in some states: why not now, or "" when they do. */
    const NEEDS = {
        "switch": function (s) { return s.staged_version ? "" : "Nothing is staged."; },
        "cancel": function (s) { return s.progress || s.state === "staging" ? "" : "No job is running."; },
        "mark-good": function (s) {
            return s.state === "verifying" ? "" : "Only a release on trial (verifying) can be marked good.";
        },
        "release-hold": function (s) { return s.holds && s.holds.length ? "" : "No hold is in place."; },
    };

    function applyRights() {
        document.querySelectorAll("[data-right]").forEach(function (b) {
            const r = rights[b.dataset.right];
            let why = "";
            if (!r)
                why = "patchd did not say whether you may do this";
            else if (r.result === "auth")
                why = r.text + "; turn on administrative access";
            else if (r.result !== "yes")
                why = r.text;
            if (!why && status && NEEDS[b.id])
                why = NEEDS[b.id](status);
            b.disabled = why !== "";
            b.title = why;
            if (b.parentElement && b.parentElement.classList.contains("patchd-tooltip"))
                b.parentElement.title = why;
        });
    }

    function loadRights() {
        return call("GetAuthorizations")
            .then(function (reply) {
                rights = JSON.parse(reply[0]);
                applyRights();
            })
            .catch(function (err) {
                rights = {};
                applyRights();
                explain("ask which actions you may perform", err);
            });
    }

    /* --- overview ------------------------------------------------------------------ */

    function setProgress(p) {
        /* p: [phase, done, total, rate] as the Progress property carries it. */
        const box = $("progress");
        if (!p || !p[0]) {
            box.hidden = true;
            return;
        }
        const done = Number(p[1]);
        const total = Number(p[2]);
        const pct = total > 0 ? Math.min(100, Math.floor(done * 100 / total)) : 0;
        box.hidden = false;
        box.dataset.phase = p[0];
        box.dataset.percent = String(pct);
        let label = p[0] + ": " + done + (total > 0 ? " of " + total + " (" + pct + " %)" : "");
        if (Number(p[3]) > 0)
            label += ", " + Math.round(Number(p[3]) / 1024) + " KiB/s";
        $("progress-label").textContent = label;
        $("progress-bar").setAttribute("aria-valuenow", String(pct));
        $("progress-indicator").style.width = pct + "%";
    }

    function holdText(h) {
        let t = h.reason + " (by " + h.by;
        t += h.until ? ", until " + when(h.until) : ", until released";
        if (h.max_version)
            t += ", allows up to " + h.max_version;
        return t + ")";
    }

    function renderOverview(s) {
        text($("state"), s.state);
        $("state").dataset.state = s.state || "";
        const n = s.next || {};
        text($("next"), n.text ? n.text + (n.at ? " — " + when(n.at) : "") : "");
        $("next").dataset.kind = n.kind || "";
        text($("current-version"), s.current_version);
        text($("staged-version"), s.staged_version);
        const holds = $("holds");
        holds.textContent = "";
        if (!s.holds || s.holds.length === 0)
            text(holds, "none");
        else
            s.holds.forEach(function (h) { holds.appendChild(node("div", "patchd-hold", holdText(h))); });
        text($("next-window"), when(s.next_window));
        const c = s.last_check_outcome;
        let check = when(s.last_check) || "never";
        if (c && c.ok === false)
            check += "; last attempt " + when(c.at) + " failed: " + (c.error || "unknown error");
        text($("last-check"), check);
        text($("last-error"), s.last_error || "none");
        const j = s.last_job;
        text($("last-job"), j ? j.kind + (j.release ? " " + j.release : "") + ": " + j.outcome +
            (j.error ? " — " + j.error : "") : "none since patchd started");
        setProgress(s.progress ? [s.progress.phase, s.progress.done, s.progress.total, s.progress.rate] : null);
        const body = $("slots").tBodies[0];
        body.textContent = "";
        (s.slots || []).forEach(function (sl) {
            const tr = node("tr");
            tr.appendChild(node("td", "", sl.name));
            tr.appendChild(node("td", "", sl.state));
            tr.appendChild(node("td", "", sl.version || "—"));
            tr.appendChild(node("td", "", sl.booted ? "booted" : ""));
            body.appendChild(tr);
        });
    }

    /* --- releases ------------------------------------------------------------------ */

    const GROUPS = [
        ["installable", "Installable"],
        ["waiting", "Waiting"],
        ["not_applicable", "Not applicable"],
    ];

    function button(label, right, cls, onClick) {
        const wrap = node("span", "patchd-tooltip");
        const b = node("button", "pf-v5-c-button pf-m-small " + cls, label);
        b.type = "button";
        b.dataset.right = right;
        b.addEventListener("click", onClick);
        wrap.appendChild(b);
        return wrap;
    }

    function releaseRow(r) {
        const tr = node("tr");
        tr.dataset.version = r.version;
        tr.dataset.group = r.group || "";
        tr.appendChild(node("td", "", r.version));
        tr.appendChild(node("td", "", r.kind));
        tr.appendChild(node("td", "", r.severity));
        tr.appendChild(node("td", "", (r.cves || []).join(", ") || "—"));
        const why = node("td");
        if (r.description)
            why.appendChild(node("div", "", r.description));
        const reasons = (r.reasons && r.reasons.length) ? r.reasons : (r.summary ? [r.summary] : []);
        reasons.forEach(function (x) { why.appendChild(node("div", "patchd-reason", x)); });
        if (r.when || r.until)
            why.appendChild(node("div", "patchd-reason", r.when || ("until " + when(r.until))));
        tr.appendChild(why);
        const actions = node("td", "patchd-actions");
        if (r.group !== "not_applicable") {
            actions.appendChild(button("Install", "org.patchd.patchd1.install", "pf-m-primary", function () {
                act("install " + r.version, "Install", [r.version, {}], "sa{sv}",
                    "Installing " + r.version + "; progress shows in the overview");
            }));
        }
        if (reasons.some(function (x) { return /approv/i.test(x); })) {
            actions.appendChild(button("Approve", "org.patchd.patchd1.approve", "pf-m-secondary", function () {
                act("approve " + r.version, "Approve", [r.version], "s", "Approved " + r.version);
            }));
        }
        tr.appendChild(actions);
        return tr;
    }

    function renderReleases(s) {
        const body = $("release-table").tBodies[0];
        body.textContent = "";
        const all = s.available || [];
        GROUPS.forEach(function (g) {
            const rows = all.filter(function (r) { return (r.group || "installable") === g[0]; });
            if (rows.length === 0)
                return;
            const head = node("tr", "patchd-group");
            const th = node("th", "", g[1]);
            th.colSpan = 6;
            head.appendChild(th);
            body.appendChild(head);
            rows.forEach(function (r) { body.appendChild(releaseRow(r)); });
        });
        $("releases-empty").hidden = all.length > 0;
    }

    /* --- history ------------------------------------------------------------------- */

    const SHOWN = ["time", "event", "actor", "version", "release", "seq", "hash", "prev"];

    function renderHistory(records) {
        const body = $("history-table").tBodies[0];
        body.textContent = "";
        const needle = $("filter-text").value.trim().toLowerCase();
        records.slice().reverse().forEach(function (r) {
            if (needle && JSON.stringify(r).toLowerCase().indexOf(needle) < 0)
                return;
            const tr = node("tr");
            tr.dataset.event = r.event || "";
            tr.appendChild(node("td", "", when(r.time || r.ts || r.at)));
            tr.appendChild(node("td", "", r.event));
            tr.appendChild(node("td", "", r.actor || ""));
            tr.appendChild(node("td", "", r.version || r.release || ""));
            const rest = Object.keys(r).filter(function (k) {
                return SHOWN.indexOf(k) < 0 && r[k] !== null && r[k] !== "";
            }).map(function (k) {
                const v = r[k];
                return k + ": " + (typeof v === "object" ? JSON.stringify(v) : v);
            });
            tr.appendChild(node("td", "patchd-details", rest.join("; ")));
            body.appendChild(tr);
        });
    }

    function loadHistory() {
        const f = {};
        const ev = $("filter-event").value.trim();
        const rel = $("filter-release").value.trim();
        if (ev)
            f.event = { t: "s", v: ev };
        if (rel)
            f.release = { t: "s", v: rel };
        f.limit = { t: "u", v: 500 };
        return call("GetHistory", [f], "a{sv}")
            .then(function (reply) { renderHistory(JSON.parse(reply[0])); })
            .catch(function (err) { explain("read the audit trail", err); });
    }

    function verifyAudit() {
        return call("VerifyAudit")
            .then(function (reply) {
                const v = JSON.parse(reply[0]);
                const out = $("audit-result");
                out.dataset.ok = String(v.ok === true);
                let t = v.ok ? "Audit log intact (" + v.records + " records)." :
                    "Audit log BROKEN: " + (v.error || "verification failed");
                (v.problems || []).forEach(function (p) { t += " Problem: " + p + "."; });
                (v.warnings || []).forEach(function (w) { t += " Warning: " + w + "."; });
                out.textContent = t;
                out.className = v.ok ? "patchd-ok" : "patchd-bad";
            })
            .catch(function (err) { explain("verify the audit log", err); });
    }

    /* --- inventory ----------------------------------------------------------------- */

    function scalar(v) {
        if (v === null || v === undefined || v === "")
            return "—";
        if (typeof v === "boolean")
            return v ? "yes" : "no";
        return String(v);
    }

    function renderValue(v) {
        if (Array.isArray(v)) {
            if (v.length === 0)
                return node("span", "", "none");
            if (typeof v[0] !== "object" || v[0] === null)
                return node("span", "", v.map(scalar).join(", "));
            const keys = [];
            v.forEach(function (o) {
                Object.keys(o || {}).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); });
            });
            const t = node("table", "pf-v5-c-table pf-m-compact");
            const hr = node("tr");
            keys.forEach(function (k) { hr.appendChild(node("th", "", k.replace(/_/g, " "))); });
            t.appendChild(node("thead")).appendChild(hr);
            const tb = t.appendChild(node("tbody"));
            v.forEach(function (o) {
                const tr = node("tr");
                keys.forEach(function (k) {
                    const x = (o || {})[k];
                    tr.appendChild(node("td", "", typeof x === "object" && x !== null ? JSON.stringify(x) : scalar(x)));
                });
                tb.appendChild(tr);
            });
            return t;
        }
        if (typeof v === "object" && v !== null) {
            const dl = node("dl", "pf-v5-c-description-list pf-m-horizontal");
            Object.keys(v).forEach(function (k) {
                const g = node("div", "pf-v5-c-description-list__group");
                g.appendChild(node("dt", "", k.replace(/_/g, " ")));
                g.appendChild(node("dd")).appendChild(renderValue(v[k]));
                dl.appendChild(g);
            });
            return dl;
        }
        return node("span", "", scalar(v));
    }

    function loadInventory() {
        return call("GetInventory")
            .then(function (reply) {
                const inv = JSON.parse(reply[0]);
                const out = $("inventory-body");
                out.textContent = "";
                function card(key, title, value) {
                    const c = node("div", "pf-v5-c-card");
                    c.dataset.section = key;
                    c.appendChild(node("div", "pf-v5-c-card__title")).appendChild(node("h2", "", title));
                    c.appendChild(node("div", "pf-v5-c-card__body")).appendChild(renderValue(value));
                    out.appendChild(c);
                }
                /* Plain values (architecture, channel, …) in one card, then a card per
                 * section (os, hardware, slots, bootloader, pending patches, holds). */
                const plain = {};
                const sections = [];
                Object.keys(inv).forEach(function (k) {
                    if (inv[k] !== null && typeof inv[k] === "object")
                        sections.push(k);
                    else
                        plain[k] = inv[k];
                });
                card("device", "Device", plain);
                sections.forEach(function (k) { card(k, k.charAt(0).toUpperCase() + k.slice(1).replace(/_/g, " "), inv[k]); });
            })
            .catch(function (err) { explain("read the inventory", err); });
    }

    /* --- status -------------------------------------------------------------------- */

    /* One GetStatus at a time; a change while one runs asks for one more afterwards. */
    function refresh() {
        if (refreshing) {
            refreshAgain = true;
            return refreshing;
        }
        refreshing = call("GetStatus")
            .then(function (reply) {
                status = JSON.parse(reply[0]);
                renderOverview(status);
                renderReleases(status);
                applyRights();
                document.body.dataset.loaded = "true";
            })
            .catch(function (err) { explain("read patchd's status", err); })
            .then(function () {
                refreshing = null;
                if (refreshAgain) {
                    refreshAgain = false;
                    refresh();
                }
            });
        return refreshing;
    }

    function onPropertiesChanged(path, iface, signal, args) {
        if (args[0] !== IFACE)
            return;
        const changed = args[1] || {};
        /* The bar follows the signal itself; the rest is read again as one document. */
        if (changed.Progress)
            setProgress(changed.Progress.v);
        refresh();
        if (!$("history").hidden)
            loadHistory();
    }

    function onJobFinished(path, iface, signal, args) {
        const outcome = args[1];
        if (outcome === "failed")
            show("danger", "Job " + args[0] + " failed", args[2]);
        else
            show(outcome === "succeeded" ? "success" : "info", "Job " + args[0] + " " + outcome, "");
        refresh();
    }

    /* --- wiring -------------------------------------------------------------------- */

    function selectTab(name) {
        document.querySelectorAll("[data-tab]").forEach(function (t) {
            t.parentElement.classList.toggle("pf-m-current", t.dataset.tab === name);
            t.setAttribute("aria-selected", String(t.dataset.tab === name));
        });
        document.querySelectorAll("[data-panel]").forEach(function (p) {
            p.hidden = p.dataset.panel !== name;
        });
        if (name === "history")
            loadHistory();
        if (name === "inventory")
            loadInventory();
    }

    function wire() {
        document.querySelectorAll("[data-tab]").forEach(function (t) {
            t.addEventListener("click", function () { selectTab(t.dataset.tab); });
        });
        $("message-close").addEventListener("click", function () { $("message").hidden = true; });
        $("check").addEventListener("click", function () {
            call("Check")
                .then(function (reply) {
                    const v = JSON.parse(reply[0]);
                    const n = (v.available || []).length;
                    show("success", "Checked for updates", n + (n === 1 ? " release" : " releases") + " offered");
                    refresh();
                })
                .catch(function (err) { explain("check for updates", err); });
        });
        $("switch").addEventListener("click", function () {
            /* force = false: policy decides, its refusal is shown (as patchctl switch). */
            act("switch to the staged release", "Switch", [{ force: { t: "b", v: false } }], "a{sv}",
                "Switching to the staged release; the machine reboots");
        });
        $("mark-good").addEventListener("click", function () {
            act("mark the booted release good", "MarkGood", [], "", "Marked the booted release good");
        });
        $("rollback").addEventListener("click", function () {
            act("roll back", "Rollback", ["rolled back from Cockpit"], "s",
                "Rolling back to the previous release; the machine reboots");
        });
        $("cancel").addEventListener("click", function () {
            act("cancel the running job", "Cancel", [], "", "Cancel requested");
        });
        $("hold-form").addEventListener("submit", function (ev) {
            ev.preventDefault();
            const reason = $("hold-reason").value.trim();
            if (!reason) {
                show("warning", "A hold needs a reason", "It is recorded in the audit trail.");
                return;
            }
            act("place a hold", "PlaceHold", [reason, $("hold-until").value.trim(), $("hold-max").value.trim()],
                "sss", "Hold placed");
        });
        $("release-hold").addEventListener("click", function () {
            act("release the hold", "ReleaseHold", [], "", "Hold released");
        });
        $("history-filter").addEventListener("submit", function (ev) {
            ev.preventDefault();
            loadHistory();
        });
        $("verify-audit").addEventListener("click", verifyAudit);
    }

    let lastConnect = 0;

    /* One client at a time. Cockpit closes a superuser "try" channel when
     * administrative access is switched on or off: the page connects again (as the new
     * user), asks for its rights again and reads the status again. */
    function connect() {
        lastConnect = Date.now();
        const c = cockpit.dbus(NAME, { bus: "system", superuser: "try" });
        client = c;
        c.subscribe({ path: PATH, interface: "org.freedesktop.DBus.Properties", member: "PropertiesChanged" },
                    onPropertiesChanged);
        c.subscribe({ path: PATH, interface: IFACE, member: "JobFinished" }, onJobFinished);
        c.addEventListener("close", function (ev, opts) {
            if (client !== c)
                return;
            const why = (opts && (opts.message || opts.problem)) || "";
            /* At most one new connection every 5 s: a bridge that keeps refusing ends
             * with the message, not with a loop. */
            const wait = Math.max(0, 5000 - (Date.now() - lastConnect));
            show("warning", "Connection to patchd closed; connecting again", why);
            window.setTimeout(function () {
                if (client === c) {
                    connect();
                    loadRights().then(refresh);
                }
            }, wait);
        });
    }

    function start() {
        wire();
        connect();
        /* Rights follow Cockpit's administrative access switch. */
        const perm = cockpit.permission({ admin: true });
        perm.addEventListener("changed", function () { loadRights().then(refresh); });
        loadRights().then(refresh);
    }

    document.addEventListener("DOMContentLoaded", start);
}());

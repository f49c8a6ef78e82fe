/* The operator console. Signs an admin in with POST auth/login and drives the /admin/api
 * routes with that token (kept in sessionStorage: gone with the tab). Every value shown is
 * set with textContent. The API base is where this script was loaded from, minus
 * "admin/assets/console.js": it works under API Gateway's stage prefix and locally. */
(function () {
  "use strict";
  var BASE = document.currentScript.src.replace(/admin\/assets\/console\.js(\?.*)?$/, "");
  var TOKEN_KEY = "console.token";
  var state = {user: null, ledgerCursor: null, auditCursor: null, refund: null};

  function $(id) { return document.getElementById(id); }
  function node(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = document.createElement("td");
      if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c === null || c === undefined ? "" : String(c); }
      tr.appendChild(td);
    });
    return tr;
  }
  function clear(e) { while (e.firstChild) { e.removeChild(e.firstChild); } }
  function say(text, isError) {
    var m = $("message");
    m.textContent = text; m.hidden = !text; m.className = isError ? "error" : "";
  }
  function key() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function api(method, path, body, headers) {
    var h = Object.assign({"Content-Type": "application/json"}, headers || {});
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) { h.Authorization = "Bearer " + token; }
    return fetch(BASE + path, {method: method, headers: h, body: body ? JSON.stringify(body) : undefined})
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        var read = type.indexOf("application/json") === 0 ? response.json() : response.text();
        return read.then(function (data) {
          if (response.status === 401) { signOut("Your session has ended: sign in again."); }
          if (!response.ok) {
            var error = new Error((data && (data.error || data.message)) || ("HTTP " + response.status));
            error.status = response.status;
            throw error;
          }
          return data;
        });
      });
  }
  function failed(error) { say(error.message, true); }

  // --- navigation ---------------------------------------------------------------------------
  var LOADERS = {users: function () {}, business: loadBusiness, attention: loadAttention, audit: function () { loadAudit(true); }};
  function show(view) {
    Array.prototype.forEach.call(document.querySelectorAll(".view"), function (v) { v.hidden = v.id !== "view-" + view; });
    Array.prototype.forEach.call(document.querySelectorAll("nav .tab"), function (b) {
      b.classList.toggle("active", b.getAttribute("data-view") === view);
    });
    say("");
    if (LOADERS[view]) { LOADERS[view](); }
  }
  function signedIn(email) {
    $("nav").hidden = false;
    $("who").textContent = email || "";
    show("users");
  }
  function signOut(text) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem("console.email");
    $("nav").hidden = true;
    show("login");
    if (text) { say(text, true); }
  }

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    api("POST", "auth/login", {email: $("login-email").value, password: $("login-password").value})
      .then(function (session) {
        if (!session.user || !session.user.is_admin) { throw new Error("This account is not an administrator."); }
        sessionStorage.setItem(TOKEN_KEY, session.token);
        sessionStorage.setItem("console.email", session.user.email);
        $("login-password").value = "";
        signedIn(session.user.email);
      }).catch(failed);
  });
  $("sign-out").addEventListener("click", function () { signOut(); });
  Array.prototype.forEach.call(document.querySelectorAll("nav .tab"), function (b) {
    b.addEventListener("click", function () { show(b.getAttribute("data-view")); });
  });

  // --- users --------------------------------------------------------------------------------
  $("search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var list = $("search-results");
    clear(list);
    api("GET", "admin/api/users?q=" + encodeURIComponent($("search-q").value.trim())).then(function (data) {
      if (!data.items.length) { list.appendChild(node("li", "No user found.")); }
      data.items.forEach(function (u) {
        var li = node("li");
        var open = node("button", u.email + " (" + u.user_id + ")", "link result");
        open.type = "button";
        open.addEventListener("click", function () { openUser(u.user_id); });
        li.appendChild(open);
        li.appendChild(node("span", " · created " + (u.created_at || "?").slice(0, 10)));
        list.appendChild(li);
      });
      if (data.items.length === 1) { openUser(data.items[0].user_id); }
    }).catch(failed);
  });

  function openUser(userId) {
    return api("GET", "admin/api/users/" + encodeURIComponent(userId)).then(function (detail) {
      state.user = detail.user;
      $("user-detail").hidden = false;
      $("detail-email").textContent = detail.user.email + " — " + detail.user.user_id;
      var facts = $("detail-profile");
      clear(facts);
      [["Name", detail.user.name], ["Role", detail.user.role], ["Status", detail.user.status],
       ["Created", detail.user.created_at], ["Last login", detail.user.last_login],
       ["Subscription", detail.subscription.tier + (detail.subscription.status ? " (" + detail.subscription.status + ")" : "")],
       ["Purchased", detail.balance.total_credits_purchased], ["Used", detail.balance.total_usage],
       ["Flagged", detail.flags.flagged ? "yes: " + (detail.flags.flagged_reason || "") : "no"]].forEach(function (f) {
        var d = node("div"); d.appendChild(node("strong", f[0] + ": ")); d.appendChild(node("span", f[1]));
        facts.appendChild(d);
      });
      $("detail-balance").textContent = detail.balance.balance;
      showInvariant(detail.invariant);
      var holds = $("detail-holds").tBodies[0];
      clear(holds);
      detail.holds.forEach(function (h) { holds.appendChild(row([h.reservation_id, h.purpose, h.amount, h.expires_at])); });
      $("refund-form").hidden = true;
      clear($("detail-ledger").tBodies[0]);
      state.ledgerCursor = null;
      loadLedger();
      loadUserAudit();
    }).catch(failed);
  }
  function showInvariant(inv) {
    var e = $("detail-invariant");
    e.textContent = inv.ok ? "holds" : "BROKEN (records explain " + inv.expected + ", balance is " + inv.actual + ")";
    e.className = inv.ok ? "good" : "bad";
  }
  function loadLedger() {
    var path = "admin/api/users/" + state.user.user_id + "/ledger?limit=20" +
      (state.ledgerCursor ? "&cursor=" + encodeURIComponent(state.ledgerCursor) : "");
    api("GET", path).then(function (page) {
      var body = $("detail-ledger").tBodies[0];
      page.items.forEach(function (e) {
        var action = "";
        if (e.kind === "purchase" && e.status === "completed") {
          action = node("button", "Refund…", "link");
          action.type = "button";
          action.addEventListener("click", function () { startRefund(e.id); });
        }
        body.appendChild(row([e.at, e.kind, e.source, e.status, e.credits, e.balance_after, e.reason, action]));
      });
      state.ledgerCursor = page.next_cursor;
      $("ledger-more").hidden = !page.next_cursor;
      showInvariant(page.invariant);
    }).catch(failed);
  }
  $("ledger-more").addEventListener("click", loadLedger);
  function loadUserAudit() {
    api("GET", "admin/api/audit?limit=20&target=" + state.user.user_id).then(function (page) {
      var body = $("detail-audit").tBodies[0];
      clear(body);
      page.items.forEach(function (a) { body.appendChild(row([a.at, a.actor_email || a.actor, a.action, a.reason])); });
    }).catch(failed);
  }

  var pendingKeys = {};
  function onceKey(name) { if (!pendingKeys[name]) { pendingKeys[name] = key(); } return pendingKeys[name]; }
  function done(name) { delete pendingKeys[name]; }

  $("adjust-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var direction = (event.submitter && event.submitter.getAttribute("data-direction")) || "grant";
    var body = {credits: parseInt($("adjust-credits").value, 10), reason: $("adjust-reason").value};
    var name = direction + JSON.stringify(body) + state.user.user_id;
    api("POST", "admin/api/users/" + state.user.user_id + "/" + direction, body, {"Idempotency-Key": onceKey(name)})
      .then(function (result) {
        done(name);
        $("adjust-credits").value = ""; $("adjust-reason").value = "";
        return openUser(state.user.user_id).then(function () {
          say((direction === "grant" ? "Granted " : "Deducted ") + result.credits + " credits; balance " + result.balance_after + ".");
        });
      }).catch(failed);
  });
  $("status-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var action = (event.submitter && event.submitter.getAttribute("data-status")) || "suspend";
    api("POST", "admin/api/users/" + state.user.user_id + "/" + action, {reason: $("status-reason").value})
      .then(function (result) {
        $("status-reason").value = "";
        return openUser(state.user.user_id).then(function () { say("Account is now " + result.status + "."); });
      }).catch(failed);
  });
  function startRefund(transactionId) {
    state.refund = transactionId;
    $("refund-target").textContent = transactionId;
    $("refund-form").hidden = false;
  }
  $("refund-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var body = {reason: $("refund-reason").value};
    if ($("refund-amount").value) { body.amount = parseInt($("refund-amount").value, 10); }
    var name = "refund" + state.refund + JSON.stringify(body);
    api("POST", "admin/api/purchases/" + encodeURIComponent(state.refund) + "/refund", body, {"Idempotency-Key": onceKey(name)})
      .then(function (result) {
        done(name);
        $("refund-form").hidden = true;
        say("Refund " + result.refund_id + " (" + result.amount + " cents) is " + result.status +
            "; the credits are taken back when Stripe confirms it.");
      }).catch(failed);
  });

  // --- business -----------------------------------------------------------------------------
  // Provider costs are fractions of a cent: small amounts keep two significant digits.
  function money(usd) {
    var size = Math.abs(usd);
    var text = size === 0 ? "0" : size < 0.01 ? size.toPrecision(2) : size.toFixed(2);
    return (usd < 0 ? "-$" : "$") + text;
  }
  function dollars(cents) { return money(cents / 100); }
  function microDollars(micro) { return money(micro / 1e6); }
  function loadBusiness() {
    api("GET", "admin/api/business?days=" + $("business-days").value).then(function (r) {
      var labels = r.daily.map(function (d) { return d.date; });
      var pick = function (name, scale) { return r.daily.map(function (d) { return d[name] / (scale || 1); }); };
      var totals = $("business-totals");
      clear(totals);
      [["Net revenue", dollars(r.revenue.total)], ["Refunds", dollars(r.revenue.refunds)],
       ["Provider cost", microDollars(r.provider_costs.total)],
       ["Margin", microDollars(r.margin.amount) + (r.margin.percent === null ? "" : " (" + r.margin.percent + "%)")],
       ["Active users", r.active_users], ["Credits sold", r.credits.sold], ["Credits used", r.credits.used]]
        .forEach(function (f) { var d = node("div"); d.appendChild(node("strong", f[0] + ": ")); d.appendChild(node("span", f[1])); totals.appendChild(d); });
      var charts = $("charts");
      clear(charts);
      Charts.draw(charts, {id: "revenue", title: "Revenue and refunds by day ($)", labels: labels, format: money, series: [
        {name: "net revenue", values: pick("revenue", 100), kind: "bar", color: "#4a7"},
        {name: "refunds", values: pick("refunds", 100), kind: "bar", color: "#d64"}]});
      Charts.draw(charts, {id: "costs", title: "Provider cost and margin by day ($)", labels: labels, format: money, series: [
        {name: "provider cost", values: pick("provider_cost", 1e6), kind: "bar", color: "#c93"},
        {name: "margin", values: pick("margin", 1e6), kind: "line", color: "#36c"}]});
      Charts.draw(charts, {id: "users", title: "Active users by day", labels: labels, series: [
        {name: "active users", values: pick("active_users"), kind: "bar", color: "#76b"}]});
      Charts.draw(charts, {id: "credits", title: "Credits sold and used by day", labels: labels, series: [
        {name: "sold", values: pick("credits_sold"), kind: "bar", color: "#4a7"},
        {name: "used", values: pick("credits_used"), kind: "bar", color: "#c93"}]});
      var top = $("top-users").tBodies[0];
      clear(top);
      r.top_users.forEach(function (u) {
        top.appendChild(row([u.email || u.user_id, u.calls, microDollars(u.provider_cost), dollars(u.revenue)]));
      });
    }).catch(failed);
  }
  $("business-days").addEventListener("change", loadBusiness);

  // --- attention ----------------------------------------------------------------------------
  function section(parent, title, items, columns) {
    parent.appendChild(node("h3", title + " (" + items.length + ")"));
    if (!items.length) { parent.appendChild(node("p", "Nothing.")); return; }
    var table = node("table");
    var head = node("tr");
    columns.forEach(function (c) { head.appendChild(node("th", c)); });
    table.appendChild(head);
    items.forEach(function (item) { table.appendChild(row(columns.map(function (c) { return item[c]; }))); });
    parent.appendChild(table);
  }
  function loadAttention() {
    api("GET", "admin/api/attention").then(function (r) {
      var box = $("attention");
      clear(box);
      section(box, "Failed catch-up jobs (last " + r.thresholds.failed_job_days + " days)", r.failed_jobs, ["job_id", "user_id", "error", "created_at"]);
      section(box, "Stuck catch-up jobs", r.stuck_jobs, ["job_id", "user_id", "status", "attempts", "created_at"]);
      section(box, "Orphaned Stripe events", r.orphaned_events, ["event_id", "type", "reason", "handled_at"]);
      section(box, "Stripe events held for review", r.review_events, ["event_id", "type", "reason", "handled_at"]);
      section(box, "Reservations past due", r.overdue_reservations, ["reservation_id", "user_id", "purpose", "amount", "expires_at"]);
      section(box, "Invariant breaches (last cleanup run)", r.invariant_breaches.items, ["user_id", "expected", "actual"]);
    }).catch(failed);
  }

  // --- audit --------------------------------------------------------------------------------
  function loadAudit(fresh) {
    if (fresh) { state.auditCursor = null; clear($("audit-table").tBodies[0]); }
    api("GET", "admin/api/audit?limit=50" + (state.auditCursor ? "&cursor=" + encodeURIComponent(state.auditCursor) : ""))
      .then(function (page) {
        var body = $("audit-table").tBodies[0];
        page.items.forEach(function (a) {
          body.appendChild(row([a.at, a.actor_email || a.actor, a.action, a.target, a.reason, a.request_id]));
        });
        state.auditCursor = page.next_cursor;
        $("audit-more").hidden = !page.next_cursor;
      }).catch(failed);
  }
  $("audit-more").addEventListener("click", function () { loadAudit(false); });
  $("audit-export").addEventListener("click", function () {
    api("GET", "admin/api/audit/export").then(function (text) {
      var link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
      link.download = "audit-log.csv";
      document.body.appendChild(link);
      link.click();
      link.remove();
    }).catch(failed);
  });

  if (sessionStorage.getItem(TOKEN_KEY)) { signedIn(sessionStorage.getItem("console.email")); } else { show("login"); }
}());

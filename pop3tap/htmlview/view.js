"use strict";
// pop3tap session view. Every capture string reaches the page through textContent only:
// nothing from a capture is ever parsed as HTML, used as a URL or run.
(function () {
  var app = document.getElementById("app");
  var filterBox = document.getElementById("filter");
  var countBox = document.getElementById("count");
  var model = JSON.parse(document.getElementById("model").textContent);
  var exRows = [];      // every exchange row element, in page order
  var visible = [];     // the exchange rows the filter lets through
  var cur = -1;         // index into visible of the focused row

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function ms(v) {
    if (v === null || v === undefined) return "";
    if (v >= 10000) return (v / 1000).toFixed(2) + " s";
    return v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2) + " ms";
  }
  function bytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MiB";
    if (n >= 1024) return (n / 1024).toFixed(1) + " KiB";
    return n + " B";
  }
  function flagNames(bits) {
    var names = [];
    for (var i = 0; i < model.flags.length; i++) if (bits & (1 << i)) names.push(model.flags[i]);
    return names;
  }

  function sessionList(sessions) {
    var table = el("table", "sessions");
    var head = el("tr");
    ["", "client", "upstream", "user", "start", "duration", "exchanges", "bytes c\u2192s / s\u2192c",
     "close", "TLS", "findings"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    sessions.forEach(function (s, i) {
      var tr = el("tr", s.problem ? "damaged" : null);
      var link = el("a", null, "#" + (i + 1));
      link.href = "#s" + i;
      var first = el("td");
      first.appendChild(link);
      tr.appendChild(first);
      [s.client, s.upstream, s.user, s.started, ms(s.duration), s.exchanges,
       bytes(s.bytes[0]) + " / " + bytes(s.bytes[1]),
       s.close === null ? "no close record" : s.close, s.tls ? "yes" : "no", s.findings
      ].forEach(function (v) {
        var td = el("td", null, v);
        td.title = String(v);
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    return table;
  }

  function verbTable(verbs) {
    var table = el("table", "verbs");
    var head = el("tr");
    ["verb", "count", "median", "p95", "max"].forEach(function (h) {
      head.appendChild(el("th", null, h));
    });
    table.appendChild(head);
    verbs.forEach(function (v) {
      var tr = el("tr");
      tr.appendChild(el("td", null, v[0]));
      tr.appendChild(el("td", null, v[1]));
      for (var i = 2; i < 5; i++) tr.appendChild(el("td", null, ms(v[i])));
      table.appendChild(tr);
    });
    return table;
  }

  function bodyView(text) {
    var pre = el("pre", "body");
    var lines = text.split("\n");
    var inHeader = true;
    var chunk = [];
    function flush() {
      if (chunk.length) { pre.appendChild(document.createTextNode(chunk.join("\n") + "\n")); }
      chunk = [];
    }
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].replace(/\r$/, "");
      if (inHeader && line === "") { inHeader = false; chunk.push(""); continue; }
      if (inHeader) {
        var m = /^([!-9;-~]+:)(.*)$/.exec(line);
        if (m) {
          flush();
          pre.appendChild(el("span", "hname", m[1]));
          pre.appendChild(el("span", "hvalue", m[2] + "\n"));
          continue;
        }
        if (/^[ \t]/.test(line)) {
          flush();
          pre.appendChild(el("span", "hvalue", line + "\n"));
          continue;
        }
        inHeader = false;
      }
      chunk.push(line);
    }
    flush();
    return pre;
  }

  function toggleBody(row) {
    var s = row._session;
    var index = row._row[12];
    if (index === null || index === undefined) return;
    var shown = row.nextSibling && row.nextSibling._bodyOf === row ? row.nextSibling : null;
    if (shown) {
      shown.parentNode.removeChild(shown);
      row.classList.remove("open");
      row.setAttribute("aria-expanded", "false");
      return;
    }
    var holder = el("div", "bodyrow");
    holder._bodyOf = row;
    holder.appendChild(bodyView(s.bodies[index]));
    row.parentNode.insertBefore(holder, row.nextSibling);
    row.classList.add("open");
    row.setAttribute("aria-expanded", "true");
  }

  function bar(track, start, first, done, span) {
    if (start === null || span <= 0) return;
    var end = done === null ? span : done;
    var mid = first === null ? end : first;
    var wait = el("i", "wait");
    wait.style.left = (100 * start / span) + "%";
    wait.style.width = Math.max(0.15, 100 * (mid - start) / span) + "%";
    track.appendChild(wait);
    if (first !== null) {
      var xfer = el("i", "xfer");
      xfer.style.left = (100 * mid / span) + "%";
      xfer.style.width = Math.max(0.15, 100 * (end - mid) / span) + "%";
      track.appendChild(xfer);
    }
  }

  function exchangeRow(s, r, span) {
    // ["x", seq, verb, args, status, first_line, sent, first, done, lines, bytes, flags,
    //  body, depth, sasl]
    var slowest = r[1] === s.slowest;
    var row = el("div", "row ex" + (slowest ? " slowest" : "") + (r[13] > 1 ? " overlap" : ""));
    row.tabIndex = -1;
    row._row = r;
    row._session = s;
    row.setAttribute("data-seq", String(r[1]));
    var flags = r[11] ? flagNames(r[11]) : [];
    var command = r[3] ? r[2] + " " + r[3] : r[2];
    row.appendChild(el("span", "t", "+" + ms(r[6])));
    var client = el("span", "lane client", command);
    if (r[13] > 1) client.appendChild(el("span", "depth", "\u21c9 " + r[13] + " in flight"));
    if (r[14]) {
      var steps = el("span", "sasl");
      r[14].forEach(function (step) {
        steps.appendChild(el("span", step[0] === "+" ? "step s" : "step c",
          step[0] === "+" ? "S: + (" + step[1] + " bytes)" : "C: " + step[1]));
      });
      client.appendChild(steps);
    }
    row.appendChild(client);
    var server = el("span", "lane server");
    server.appendChild(el("b", "st " + (r[4] === "+OK" ? "ok" : r[4] === "-ERR" ? "err" :
      r[4] === "+" ? "cont" : "none"), r[4] === null ? "(no response)" : r[4]));
    var rest = r[5] && r[4] && r[5].indexOf(r[4]) === 0 ? r[5].slice(r[4].length) : r[5];
    if (rest) server.appendChild(document.createTextNode(rest));
    if (r[12] !== null && r[12] !== undefined) {
      var toggle = el("button", "more", "\u25b8 " + r[9] + " lines, " + bytes(r[10]));
      toggle.type = "button";
      server.appendChild(toggle);
      row.setAttribute("aria-expanded", "false");
    }
    row.appendChild(server);
    var fl = el("span", "flags");
    for (var i = 0; i < flags.length; i++) fl.appendChild(el("b", "flag " + flags[i], flags[i]));
    if (slowest) fl.appendChild(el("b", "flag slow", "slowest"));
    row.appendChild(fl);
    row.appendChild(el("span", "lat", r[8] === null ? "" : ms(r[8] - r[6])));
    var track = el("span", "track");
    bar(track, r[6], r[7], r[8], span);
    row.appendChild(track);
    row._search = (command + " " + (r[5] || "")).toLowerCase();
    row._verb = r[2].toLowerCase();
    row._status = (r[4] || "none").toLowerCase();
    row._flags = slowest ? flags.concat(["slowest"]) : flags;
    return row;
  }

  // One listener for every row: a click opens or closes the body, a hover explains the bar.
  app.addEventListener("click", function (e) {
    var row = e.target.closest ? e.target.closest(".row.ex") : null;
    if (!row || e.target.closest("pre.body")) return;
    focusRow(visible.indexOf(row));
    toggleBody(row);
  });
  app.addEventListener("mouseover", function (e) {
    var track = e.target.closest ? e.target.closest(".track") : null;
    if (!track || track.title) return;
    var r = track.parentNode._row;
    if (!r) return;
    track.title = "sent +" + ms(r[6]) + ", first byte " + (r[7] === null ? "-" : "+" + ms(r[7])) +
      ", done " + (r[8] === null ? "-" : "+" + ms(r[8]));
  });

  var EVENT_CLASS = { g: "greeting", u: "unsolicited", s: "stray", t: "stls", d: "db" };

  function eventRow(r) {
    var row = el("div", "row ev " + EVENT_CLASS[r[0]]);
    row.appendChild(el("span", "t", "+" + ms(r[1])));
    var text = r[2];
    if (r[0] === "t" || r[0] === "d") {
      row.appendChild(el("span", "wide", text));
    } else {
      var onClient = r[0] === "s" && text.indexOf("c2s ") === 0;
      if (r[0] === "s") text = text.slice(4);
      var client = el("span", "lane client");
      var server = el("span", "lane server");
      var target = onClient ? client : server;
      target.appendChild(el("span", "fl", text));
      if (r[0] === "u") target.appendChild(el("b", "flag unsolicited", "unsolicited"));
      if (r[0] === "s") target.appendChild(el("b", "flag stray", "stray"));
      if (r[0] === "g") target.appendChild(el("b", "flag greeting", "greeting"));
      row.appendChild(client);
      row.appendChild(server);
    }
    row._search = text.toLowerCase();
    return row;
  }

  function sessionView(s, i) {
    var section = el("section", "session");
    section.id = "s" + i;
    section.appendChild(el("h2", null, "#" + (i + 1) + "  " + s.file));
    section.appendChild(el("p", "meta", s.client + " \u2192 " + s.upstream + "  \u00b7  session " +
      s.id + "  \u00b7  started " + s.started + "  \u00b7  secrets " + s.secrets));
    if (s.problem) section.appendChild(el("p", "problem", "\u26a0 " + s.problem +
      " \u2014 showing every record up to there"));
    var details = el("details", "summary");
    details.appendChild(el("summary", null, "latency per verb"));
    details.appendChild(verbTable(s.verbs));
    details.open = s.verbs.length > 0;
    section.appendChild(details);
    var seq = el("div", "seq");
    var head = el("div", "row head");
    ["time", "client \u2192", "\u2190 server", "flags", "latency"].forEach(function (h) {
      head.appendChild(el("span", null, h));
    });
    head.appendChild(el("span", "axis", "0 \u2026 " + ms(s.duration)));
    seq.appendChild(head);
    // Rows go in blocks of 100 that the browser may skip while off screen
    // (content-visibility), so a long session costs little more than its visible part.
    var span = s.duration || 0;
    var block = null;
    for (var i = 0; i < s.rows.length; i++) {
      if (i % 100 === 0) { block = el("div", "block"); seq.appendChild(block); }
      var r = s.rows[i];
      if (r[0] === "x") {
        var row = exchangeRow(s, r, span);
        exRows.push(row);
        block.appendChild(row);
      } else {
        block.appendChild(eventRow(r));
      }
    }
    section.appendChild(seq);
    return section;
  }

  function parseFilter(text) {
    var f = { verb: [], status: [], flag: [], words: [] };
    text.toLowerCase().split(/\s+/).forEach(function (token) {
      if (!token) return;
      var m = /^(verb|status|flag):(.*)$/.exec(token);
      if (m && m[2]) f[m[1]].push(m[2]);
      else f.words.push(token);
    });
    return f;
  }
  function statusMatches(row, want) {
    var s = row._status;
    if (want === "ok") return s === "+ok";
    if (want === "err") return s === "-err";
    return s === want;
  }
  function applyFilter() {
    var f = parseFilter(filterBox.value);
    var active = f.verb.length || f.status.length || f.flag.length || f.words.length;
    visible = [];
    var rows = app.querySelectorAll(".seq .row:not(.head)");
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = true;
      if (row._verb !== undefined) {
        if (f.verb.length && f.verb.indexOf(row._verb) < 0) ok = false;
        if (ok && f.status.length && !f.status.some(function (w) { return statusMatches(row, w); }))
          ok = false;
        if (ok && f.flag.length && !f.flag.every(function (w) { return row._flags.indexOf(w) >= 0; }))
          ok = false;
      } else if (f.verb.length || f.status.length || f.flag.length) {
        ok = false;
      }
      if (ok) ok = f.words.every(function (w) { return row._search.indexOf(w) >= 0; });
      row.hidden = !ok;
      if (ok && row._verb !== undefined) visible.push(row);
      var next = row.nextSibling;
      if (next && next._bodyOf === row) next.hidden = !ok;
    }
    countBox.textContent = active ? visible.length + " of " + exRows.length + " exchanges"
      : exRows.length + " exchanges";
    cur = -1;
  }

  function focusRow(index) {
    if (index < 0 || index >= visible.length) return;
    if (cur >= 0 && visible[cur]) visible[cur].classList.remove("cur");
    cur = index;
    var row = visible[cur];
    row.classList.add("cur");
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (e) {
    if (e.target === filterBox) {
      if (e.key === "Escape") { filterBox.value = ""; applyFilter(); filterBox.blur(); }
      else if (e.key === "Enter" || e.key === "ArrowDown") { filterBox.blur(); focusRow(0); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { e.preventDefault(); filterBox.focus(); filterBox.select(); }
    else if (e.key === "j" || e.key === "ArrowDown") { e.preventDefault(); focusRow(cur + 1); }
    else if (e.key === "k" || e.key === "ArrowUp") { e.preventDefault(); focusRow(Math.max(0, cur - 1)); }
    else if (e.key === "Home" || e.key === "g") { e.preventDefault(); focusRow(0); }
    else if (e.key === "End" || e.key === "G") { e.preventDefault(); focusRow(visible.length - 1); }
    else if ((e.key === "Enter" || e.key === "o" || e.key === " ") && cur >= 0) {
      e.preventDefault(); toggleBody(visible[cur]);
    } else if (e.key === "Escape") {
      filterBox.value = ""; applyFilter();
    }
  });
  filterBox.addEventListener("input", applyFilter);

  function rowKey(row) { return row._session.file + "\u0000" + row._row[1]; }

  function render() {
    // A live redraw keeps what the reader was doing: open bodies, the focused row, the scroll.
    var opened = {};
    exRows.forEach(function (row) { if (row.classList.contains("open")) opened[rowKey(row)] = 1; });
    var focused = cur >= 0 && visible[cur] ? rowKey(visible[cur]) : null;
    var scrollX = window.scrollX, scrollY = window.scrollY;
    exRows = [];
    app.textContent = "";
    if (model.errors.length) {
      var errors = el("ul", "errors");
      model.errors.forEach(function (m) { errors.appendChild(el("li", null, m)); });
      app.appendChild(errors);
    }
    if (!model.sessions.length) app.appendChild(el("p", "empty", "No captures yet."));
    else app.appendChild(sessionList(model.sessions));
    model.sessions.forEach(function (s, i) { app.appendChild(sessionView(s, i)); });
    exRows.forEach(function (row) { if (opened[rowKey(row)]) toggleBody(row); });
    applyFilter();
    for (var i = 0; focused !== null && i < visible.length; i++) {
      if (rowKey(visible[i]) === focused) { cur = i; visible[i].classList.add("cur"); break; }
    }
    window.scrollTo(scrollX, scrollY);
    document.body.setAttribute("data-ready", "1");
    if (window.performance && performance.mark) performance.mark("pop3tap-ready");
  }
  render();

  if (document.body.getAttribute("data-live") === "1") {
    var busy = false;
    setInterval(function () {
      if (busy) return;
      busy = true;
      fetch("state", { cache: "no-store" }).then(function (r) { return r.text(); })
        .then(function (state) {
          if (state === model.state) return null;
          return fetch("model.json", { cache: "no-store" }).then(function (r) { return r.json(); })
            .then(function (next) { model = next; render(); });
        })
        .catch(function () { countBox.textContent = "(view server unreachable)"; })
        .then(function () { busy = false; });
    }, 2000);
  }
})();

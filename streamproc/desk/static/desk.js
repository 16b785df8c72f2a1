// streamproc review console: keyboard shortcuts and the queue's short polling. No framework, no network
// access beyond this site (the Content-Security-Policy allows nothing else).
(function () {
  "use strict";
  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
  }
  function go(url) { if (url) { window.location.href = url; } }

  // Candidate page: c confirm, r reject (the note must be written first), n/p next/previous, q queue.
  function decide(value) {
    var form = document.getElementById("decision");
    if (!form) { return; }
    var note = document.getElementById("note");
    if (!note.value.trim()) { note.focus(); note.setAttribute("placeholder", "Write a note first, then press Esc and " + value[0]); return; }
    var button = document.getElementById(value);
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }

  // Queue page: poll the rows fragment so new candidates appear without a reload; j/k select, Enter opens.
  var selected = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("table.queue tbody tr")); }
  function select(i) {
    var all = rows().filter(function (r) { return r.querySelector("a"); });
    if (!all.length) { return; }
    selected = Math.max(0, Math.min(all.length - 1, i));
    all.forEach(function (r, j) { r.classList.toggle("selected", j === selected); });
  }
  function poll(box) {
    var seconds = parseInt(box.getAttribute("data-poll"), 10) || 5;
    window.setInterval(function () {
      fetch(box.getAttribute("data-src"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (r.status === 401) { window.location.reload(); } return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { box.innerHTML = html; if (selected >= 0) { select(selected); } } })
        .catch(function () { /* offline for a moment: the next poll tries again */ });
    }, seconds * 1000);
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (ev.key === "Escape" && typing(ev.target)) { ev.target.blur(); return; }
    if (typing(ev.target)) { return; }
    var pager = document.querySelector(".pager");
    if (ev.key === "c") { decide("confirm"); }
    else if (ev.key === "r") { decide("reject"); }
    else if (ev.key === "n" && pager) { go(pager.getAttribute("data-older")); }
    else if (ev.key === "p" && pager) { go(pager.getAttribute("data-newer")); }
    else if (ev.key === "q" && pager) { go("/"); }
    else if (ev.key === "j") { select(selected + 1); }
    else if (ev.key === "k") { select(selected - 1); }
    else if (ev.key === "Enter" && selected >= 0) {
      var link = rows().filter(function (r) { return r.querySelector("a"); })[selected].querySelector("a");
      go(link.getAttribute("href"));
    } else { return; }
    ev.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("queue");
    if (box) { poll(box); }
  });
})();

// Conductor dashboard: draws mermaid diagrams, moves focus to messages after an action, and copies
// the status ping. Everything else (forms, live refresh) is plain HTML plus htmx attributes.
(function () {
  "use strict";

  if (window.mermaid) {
    window.mermaid.initialize({
      startOnLoad: false, securityLevel: "strict", theme: "neutral",
      themeVariables: { fontSize: "15px" },
      state: { nodeSpacing: 28, rankSpacing: 36, useMaxWidth: true },
    });
  }

  // On a narrow screen the pipeline reads top to bottom: left to right it would be shrunk unreadable.
  var NARROW = "(max-width: 700px)";

  function drawDiagrams(root) {
    if (!window.mermaid || !root.querySelectorAll) return;
    var nodes = Array.prototype.slice.call(root.querySelectorAll("pre.mermaid:not([data-queued])"));
    if (!nodes.length) return;
    nodes.forEach(function (n) {
      n.setAttribute("data-queued", "true");
      if (window.matchMedia && window.matchMedia(NARROW).matches) {
        n.textContent = n.textContent.replace(/^(\s*)direction LR$/m, "$1direction TB");
      }
    });
    window.mermaid.run({ nodes: nodes }).then(function () {
      nodes.forEach(function (n) { var fig = n.closest(".diagram"); if (fig) fig.setAttribute("data-drawn", "true"); });
    }).catch(function (err) { console.error("diagram not drawn", err); });
  }

  // A message that appears after an action takes the focus, so keyboard and screen-reader users hear it.
  function focusMessage() {
    var msg = document.querySelector("#main [data-autofocus]:not([data-focused])");
    if (msg) { msg.setAttribute("data-focused", "true"); msg.focus(); }
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var ta = document.createElement("textarea");
      ta.value = text; ta.setAttribute("readonly", ""); ta.className = "sr-only";
      document.body.appendChild(ta); ta.select();
      var ok = document.execCommand("copy");
      document.body.removeChild(ta);
      ok ? resolve() : reject(new Error("copy refused"));
    });
  }

  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest("[data-copy]");
    if (!btn) return;
    var source = document.getElementById(btn.getAttribute("data-copy"));
    var status = document.getElementById(btn.getAttribute("aria-describedby"));
    copyText(source.value || source.textContent).then(function () {
      if (status) status.textContent = "Copied to the clipboard.";
    }, function () {
      var details = source.closest("details");
      if (details) details.open = true;
      source.focus(); source.select();
      if (status) status.textContent = "Copy was refused: the text is selected, press Ctrl+C.";
    });
  });

  function init() {
    drawDiagrams(document);
    focusMessage();
    if (window.htmx) {
      window.htmx.onLoad(function (elt) { drawDiagrams(elt); });
      document.body.addEventListener("htmx:afterSettle", focusMessage);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

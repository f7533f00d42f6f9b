// Copy buttons of the claim page: the Clipboard API where the page is a secure context
// (https, or http://127.0.0.1 / localhost), else a selection and execCommand("copy").
(function () {
  "use strict";

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function legacyCopy(element) {
    selectText(element);
    try {
      return document.execCommand("copy");
    } catch (e) {
      return false;
    }
  }

  function report(button, copied) {
    var status = button.parentNode.querySelector(".copy-status");
    button.textContent = copied ? "Copied" : "Select and copy";
    if (status) {
      status.textContent = copied ? "Copied to the clipboard." : "Press Ctrl+C (or ⌘C) to copy the selected key.";
    }
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var element = document.getElementById(button.getAttribute("data-copy"));
      var text = element.textContent.trim();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { report(button, true); },
          function () { report(button, legacyCopy(element)); }
        );
      } else {
        report(button, legacyCopy(element));
      }
    });
  });
})();

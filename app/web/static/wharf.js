// Copy buttons on command snippets. The pages work without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const pre of document.querySelectorAll("pre.snippet")) {
    const code = pre.querySelector("code");
    if (!code || !navigator.clipboard) continue; // the clipboard API needs HTTPS or localhost
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy: " + code.textContent.split("\n")[0]);
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(code.textContent.trimEnd());
        button.textContent = "Copied";
      } catch (err) {
        button.textContent = "Copy failed";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
    pre.appendChild(button);
  }
});

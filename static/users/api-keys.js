// The API keys page: the new key, shown only once, copied with one click.

const copyButton = document.getElementById("copy-new-key");
const newKey = document.getElementById("new-key");
const copyStatus = document.getElementById("copy-status");

function selectKey() {
  const range = document.createRange();
  range.selectNodeContents(newKey);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

copyButton?.addEventListener("click", async () => {
  try {
    // The clipboard API needs a secure context (HTTPS or localhost) and the page's focus.
    await navigator.clipboard.writeText(newKey.textContent.trim());
    copyStatus.textContent = "Copied.";
  } catch {
    selectKey();
    copyStatus.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
  }
});

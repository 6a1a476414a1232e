// The API keys page: the new key, shown only once, copied with one click.
import { COPY_BY_HAND, copyText } from "../common/clipboard.js";

const copyButton = document.getElementById("copy-new-key");
const newKey = document.getElementById("new-key");
const copyStatus = document.getElementById("copy-status");

copyButton?.addEventListener("click", async () => {
  const copied = await copyText(newKey.textContent.trim(), newKey);
  copyStatus.textContent = copied ? "Copied." : `Selected: press ${COPY_BY_HAND} to copy.`;
});

// Copying text for the user, shared by the pages that offer a Copy button.

export const COPY_BY_HAND = "Ctrl+C (⌘C on a Mac)";

// Puts `text` on the clipboard and returns true. The clipboard API needs a secure context (HTTPS or localhost)
// and the page's focus; where the browser refuses, the contents of `selectable` are selected instead, for the
// user's own Ctrl+C, and it returns false.
export async function copyText(text, selectable) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const range = document.createRange();
    range.selectNodeContents(selectable);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return false;
  }
}

// The chat page: a websocket client for /ws/chat/ (protocol: docs/websocket-protocol.md).
// Replies are Markdown rendered by marked and sanitised by DOMPurify before they touch the DOM; the page's
// Content-Security-Policy is the second line of defence. User text is only ever set as textContent.
import { marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import { copyText } from "../common/clipboard.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const csrfToken = document.querySelector("input[name=csrfmiddlewaretoken]").value;
const thread = document.getElementById("thread");
const form = document.getElementById("composer");
const prompt = document.getElementById("prompt");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const modelSelect = document.getElementById("model");
const statusLine = document.getElementById("connection-status");
const sidebar = document.getElementById("sidebar");
const conversationList = document.getElementById("conversations");
const usageMeter = document.getElementById("usage-meter");
const usageText = document.getElementById("usage-text");
const limitBanner = document.getElementById("limit-banner");
const promptLength = document.getElementById("prompt-length");
const exportLink = document.getElementById("export-conversation");
const editBanner = document.getElementById("edit-banner");

const UNAUTHENTICATED = 4401;

let conversationId = config.conversation;
let socket = null;
let reconnectAttempt = 0; // reconnections since the socket last stayed up (the backoff's exponent)
let stableTimer = null;
let streaming = null; // {text, element, model, renderQueued}
let unsentText = null; // the prompt of a message the server has not accepted yet
let replacedAnswer = null; // the answer a pending regenerate (or edit) will replace
let editing = null; // {question, original, sent}: the last question, changed in the composer and then sent
let connected = false;
let quota = config.quota; // the usage meter: {used, allowance, remaining, reset_at, level}
let limitedUntil = 0; // a limit refuses messages until then (ms since the epoch)
let limitTimer = null;
const answerSources = new WeakMap(); // an answer's article -> its Markdown, what "Copy" puts on the clipboard

// Refusals that come with a reset_at: the send button waits for it, with a countdown.
const LIMIT_CODES = new Set(["rate_limited", "quota_exceeded"]);
const numbers = new Intl.NumberFormat();

marked.setOptions({ gfm: true, breaks: true });
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text));
  element.querySelectorAll("pre").forEach(addCodeCopy);
}

// ---- copying -----------------------------------------------------------------------------------------------

// A button that copies what `textOf()` gives, or selects `selectable` for Ctrl+C where the browser refuses.
function copyButton(label, textOf, selectable) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.textContent = "Copy";
  button.addEventListener("click", async () => {
    button.textContent = (await copyText(textOf(), selectable)) ? "Copied" : "Selected: press Ctrl+C";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
  return button;
}

// Each code block gets its own Copy button, outside the <pre> so that it stays put while a long line scrolls.
function addCodeCopy(pre) {
  const block = document.createElement("div");
  block.className = "code-block";
  pre.replaceWith(block);
  const code = pre.querySelector("code") || pre;
  block.append(pre, copyButton("Copy code", () => code.textContent, code));
}

// A finished answer's Copy button gives its Markdown, as the model wrote it, not the rendered text.
function addAnswerCopy(article, markdown) {
  article.querySelector(".meta button.copy")?.remove();
  if (!markdown) return;
  answerSources.set(article, markdown);
  const body = article.querySelector(".body");
  article.querySelector(".meta").append(copyButton("Copy answer", () => answerSources.get(article), body));
}

// ---- thread ------------------------------------------------------------------------------------------------

function isNearBottom() {
  return thread.scrollHeight - thread.scrollTop - thread.clientHeight < 120;
}

function keepScrolled(wasNearBottom) {
  if (wasNearBottom) thread.scrollTop = thread.scrollHeight;
}

function addMessage({
  id, role, content = "", status = "complete", model = "", error_code = "", rating = 0, content_purged_at = null,
}) {
  const wasNearBottom = isNearBottom();
  const article = document.createElement("article");
  article.className = `message ${role} ${status}`;
  if (id) article.dataset.id = id;
  const body = document.createElement("div");
  body.className = "body";
  if (content_purged_at) {
    body.classList.add("purged");
    body.textContent = "This text was erased after the retention period.";
  } else if (role === "user") {
    body.textContent = content;
  } else {
    renderMarkdown(body, content);
  }
  article.append(body);
  if (role === "assistant") {
    const meta = document.createElement("div");
    meta.className = "meta";
    article.append(meta);
    setMeta(article, { status, model, error_code });
    addFeedback(article, rating);
    if (!content_purged_at && status !== "streaming") addAnswerCopy(article, content);
  }
  thread.append(article);
  keepScrolled(wasNearBottom || role === "user");
  return article;
}

const STATUS_NOTES = { stopped: "Stopped", error: "The answer failed", streaming: "…" };

function setMeta(article, { status, model, error_code, error_message }) {
  article.className = `message assistant ${status}`;
  const meta = article.querySelector(".meta");
  const parts = [];
  if (model) parts.push(model + (config.demo ? " (demo)" : ""));
  if (STATUS_NOTES[status]) parts.push(STATUS_NOTES[status]);
  if (error_message || error_code) parts.push(error_message || error_code);
  meta.textContent = parts.join(" · ");
}

// ---- feedback: thumbs up/down (and an optional comment) on a finished answer -------------------------------

// A thumb drawn as SVG, not the emoji: a machine without an emoji font shows an emoji as an empty box. A cuff and
// a hand, on a 24-unit grid; thumbs down is the same icon turned over (app.css).
const THUMB_PATH = "M3 11h4v10H3zM7 11l4-8c1.4 0 2.5 1.1 2.5 2.5V9h5.1c1.2 0 2.2 1.1 2 2.3l-1.2 7.5c-.2 1.3-1.3 2.2-2.5 2.2H7";

function thumbIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", THUMB_PATH);
  svg.append(path);
  return svg;
}

function addFeedback(article, rating = 0) {
  article.querySelector(".feedback")?.remove();
  if (!article.dataset.id || article.classList.contains("streaming")) return;
  const group = document.createElement("span");
  group.className = "feedback";
  for (const [value, label] of [[1, "Good answer"], [-1, "Bad answer"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "icon rate";
    button.dataset.rating = value;
    button.title = label;
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-pressed", String(rating === value));
    button.append(thumbIcon());
    group.append(button);
  }
  article.querySelector(".meta").append(group);
}

thread.addEventListener("click", async (event) => {
  const button = event.target.closest("button.rate");
  if (!button) return;
  const article = button.closest("article.message");
  const chosen = Number(button.dataset.rating);
  const rating = button.getAttribute("aria-pressed") === "true" ? 0 : chosen; // a second click takes it back
  const comment = rating === -1 ? window.prompt("What was wrong with this answer? (optional)") || "" : "";
  try {
    const data = await callAPI("POST", `/api/messages/${article.dataset.id}/feedback/`, { rating, comment });
    article.querySelectorAll("button.rate").forEach((b) => {
      b.setAttribute("aria-pressed", String(Number(b.dataset.rating) === data.rating));
    });
  } catch (error) {
    showNotice(error.message);
  }
});

function showNotice(text, kind = "error") {
  const wasNearBottom = isNearBottom();
  const notice = document.createElement("p");
  notice.className = `notice ${kind}`;
  notice.setAttribute("role", "alert");
  notice.textContent = text;
  thread.append(notice);
  keepScrolled(wasNearBottom);
}

// The last turn's own buttons: Regenerate on its answer, Edit on its question.
function updateLastTurnButtons() {
  thread.querySelectorAll("button.regenerate, button.edit-question").forEach((button) => button.remove());
  const last = thread.querySelector("article.message:last-of-type");
  if (!last || !last.classList.contains("assistant") || streaming) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "regenerate";
  button.textContent = "↻ Regenerate";
  button.addEventListener("click", regenerate);
  last.querySelector(".meta").append(button);
  const question = last.previousElementSibling;
  if (editing || !question?.matches("article.message.user[data-id]") || question.querySelector(".purged")) return;
  const edit = document.createElement("button");
  edit.type = "button";
  edit.className = "link edit-question";
  edit.textContent = "Edit";
  edit.title = "Change this question and get a new answer in place of the last one";
  edit.addEventListener("click", () => startEdit(question));
  question.append(edit);
}

// ---- editing the last question -----------------------------------------------------------------------------

function startEdit(question) {
  if (streaming || unsentText !== null) return;
  const original = question.querySelector(".body").textContent;
  editing = { question, original, sent: false };
  setPrompt(original);
  editBanner.hidden = false;
  updateLastTurnButtons();
  prompt.focus();
}

function cancelEdit() {
  editing = null;
  editBanner.hidden = true;
  setPrompt("");
  updateLastTurnButtons();
}

document.getElementById("cancel-edit").addEventListener("click", cancelEdit);

function sendEdit(content) {
  if (!send({ type: "edit", conversation: conversationId, content, model: modelSelect.value })) return;
  unsentText = content;
  editing.sent = true;
  editBanner.hidden = true;
  editing.question.querySelector(".body").textContent = content;
  editing.question.classList.add("pending");
  replacedAnswer = thread.querySelector("article.message.assistant:last-of-type");
  if (replacedAnswer) replacedAnswer.hidden = true;
  setPrompt("");
}

function setStreaming(value) {
  streaming = value;
  stopButton.hidden = !value;
  sendButton.hidden = Boolean(value);
  updateLastTurnButtons();
}

// ---- sidebar -----------------------------------------------------------------------------------------------

function sidebarItem(id) {
  return conversationList.querySelector(`li[data-id="${id}"]`);
}

function upsertConversation(id, title, { moveToTop = false, older = false } = {}) {
  let item = sidebarItem(id);
  if (!item) {
    conversationList.querySelector("li.empty")?.remove();
    item = document.createElement("li");
    item.dataset.id = id;
    const link = document.createElement("a");
    link.className = "title";
    link.href = `/chat/c/${id}/`;
    item.append(link, iconButton("rename", "✎", "Rename"), iconButton("delete", "✕", "Delete"));
    if (older) conversationList.append(item);
    else moveToTop = true;
  }
  item.querySelector("a.title").textContent = title || "Untitled";
  if (moveToTop) conversationList.prepend(item);
  item.classList.toggle("active", id === conversationId);
}

// The page lists the most recent conversations; older ones come from the REST API (most recently active first,
// as here), a page at a time, after those already listed.
const olderButton = document.getElementById("older-conversations");
olderButton?.addEventListener("click", async () => {
  const listed = conversationList.querySelectorAll("li[data-id]").length;
  olderButton.disabled = true;
  try {
    const response = await fetch(`/api/conversations/?limit=100&offset=${listed}`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const page = await response.json();
    for (const conversation of page.results) upsertConversation(conversation.id, conversation.title, { older: true });
    olderButton.hidden = !page.next;
  } catch {
    showNotice("Older conversations could not be loaded. Please try again.");
  } finally {
    olderButton.disabled = false;
  }
});

function iconButton(kind, symbol, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `icon ${kind}`;
  button.title = label;
  button.setAttribute("aria-label", label);
  button.textContent = symbol;
  return button;
}

// The REST API (/api/), as the signed-in user: every error comes as {"error": {"code", "message"}}.
async function callAPI(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error?.message || "The request failed.");
  return data;
}

// Rename and delete ask in dialogs of the page (<dialog>), not the browser's prompt() and confirm(): those block
// the page, cannot be styled, and some browsers offer to silence them.
const renameDialog = document.getElementById("rename-dialog");
const deleteDialog = document.getElementById("delete-dialog");

// The button the user closed `dialog` with ("cancel" for Escape), once they have.
function dialogAnswer(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = "cancel";
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}

conversationList.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  const item = event.target.closest("li[data-id]");
  if (!button || !item) return;
  const id = Number(item.dataset.id);
  const title = item.querySelector("a.title").textContent;
  try {
    if (button.classList.contains("rename")) {
      const input = document.getElementById("rename-title");
      input.value = title;
      input.select();
      if ((await dialogAnswer(renameDialog)) === "save" && input.value.trim()) {
        const data = await callAPI("PATCH", `/api/conversations/${id}/`, { title: input.value });
        upsertConversation(data.id, data.title);
      }
    } else if (button.classList.contains("delete")) {
      document.getElementById("delete-title").textContent = title;
      if ((await dialogAnswer(deleteDialog)) === "delete") {
        await callAPI("DELETE", `/api/conversations/${id}/`);
        removeConversation(id);
      }
    }
  } catch (error) {
    showNotice(error.message);
  }
});

function removeConversation(id) {
  sidebarItem(id)?.remove();
  if (id === conversationId) window.location.assign("/chat/");
}

// On a phone the sidebar slides over the page, its toggle underneath: a tap beside it or Escape closes it.
document.getElementById("toggle-sidebar").addEventListener("click", (event) => {
  event.stopPropagation();
  sidebar.classList.toggle("open");
});
document.addEventListener("click", (event) => {
  if (sidebar.classList.contains("open") && !sidebar.contains(event.target)) sidebar.classList.remove("open");
});

// ---- websocket ---------------------------------------------------------------------------------------------

// Reconnecting backs off exponentially, with jitter so that the tabs a server dropped do not all come back at the
// same instant; it starts again from the shortest delay only once a connection has stayed up, so a socket that is
// closed as soon as it opens keeps backing off (close codes: docs/websocket-protocol.md).
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 30000;
const CONNECTION_STABLE_MS = 10000;

function reconnectDelay() {
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** reconnectAttempt);
  reconnectAttempt += 1;
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function connect() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${window.location.host}/ws/chat/`);
  statusLine.textContent = "Connecting…";
  socket.addEventListener("open", () => {
    statusLine.textContent = "";
    stableTimer = setTimeout(() => { reconnectAttempt = 0; }, CONNECTION_STABLE_MS);
    connected = true;
    refreshSendButton();
    thread.querySelectorAll("article.message.assistant.unsure").forEach(showSavedAnswer);
  });
  socket.addEventListener("message", (event) => handleFrame(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    clearTimeout(stableTimer);
    connected = false;
    refreshSendButton();
    if (event.code === UNAUTHENTICATED) {
      window.location.assign(`/accounts/login/?next=${encodeURIComponent(window.location.pathname)}`);
      return;
    }
    if (streaming) {
      // How the answer ended is the server's to say: it is shown as saved once the page is connected again.
      const { element, text, model } = streaming;
      renderMarkdown(element.querySelector(".body"), text);
      setMeta(element, { status: "streaming", model, error_message: "Connection lost; reconnecting" });
      element.classList.add("unsure");
      setStreaming(null);
    }
    const delay = reconnectDelay();
    statusLine.textContent = `Reconnecting in ${Math.ceil(delay / 1000)} s…`;
    setTimeout(connect, delay);
  });
}

// An answer whose socket closed mid-stream, as the server saved it (the REST API); while the server is still
// finishing it, asked again a little later.
async function showSavedAnswer(element, attempt = 0) {
  const id = Number(element.dataset.id);
  let saved = null;
  if (id && conversationId) {
    try {
      const data = await callAPI("GET", `/api/conversations/${conversationId}/`);
      saved = data.messages.find((message) => message.id === id);
    } catch {
      saved = null;
    }
  }
  if (saved?.status === "streaming" && attempt < 10) {
    setTimeout(() => showSavedAnswer(element, attempt + 1), 1000);
    return;
  }
  element.classList.remove("unsure");
  if (!saved) {
    setMeta(element, { status: "error", error_message: "The connection was lost before the answer was saved" });
    return;
  }
  renderMarkdown(element.querySelector(".body"), saved.content);
  setMeta(element, { status: saved.status, model: saved.model });
  if (saved.status !== "streaming") {
    addFeedback(element);
    addAnswerCopy(element, saved.content);
  }
  updateLastTurnButtons();
}

function send(frame) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    showNotice("Not connected. Reconnecting…");
    return false;
  }
  socket.send(JSON.stringify(frame));
  return true;
}

function handleFrame(frame) {
  switch (frame.type) {
    case "start":
      return onStart(frame);
    case "saved":
      return onSaved(frame);
    case "delta":
      return onDelta(frame);
    case "end":
      return onEnd(frame);
    case "error":
      return onError(frame);
    case "conversation":
      return upsertConversation(frame.id, frame.title);
    case "conversation_deleted":
      return removeConversation(frame.id);
    default:
      return undefined;
  }
}

function onStart(frame) {
  // The answer streams from here on; the ids follow in "saved" (the server saves while the model thinks).
  unsentText = null;
  editing = null; // the edited question stays pending until "saved" gives its new id
  replacedAnswer?.remove();
  replacedAnswer = null;
  const element = addMessage({ role: "assistant", status: "streaming", model: frame.model });
  setStreaming({ text: "", element, model: frame.model, renderQueued: false });
}

function onSaved(frame) {
  const pendingQuestion = thread.querySelector("article.message.user.pending");
  if (pendingQuestion) {
    pendingQuestion.classList.remove("pending");
    if (frame.user_message) pendingQuestion.dataset.id = frame.user_message;
  }
  if (streaming) streaming.element.dataset.id = frame.message;
  if (frame.conversation.created) {
    conversationId = frame.conversation.id;
    window.history.replaceState(null, "", `/chat/c/${conversationId}/`);
    exportLink.href = `/chat/c/${conversationId}/export/`;
    exportLink.hidden = false;
    document.title = `${frame.conversation.title} · aisaas`;
  }
  upsertConversation(frame.conversation.id, frame.conversation.title, { moveToTop: true });
}

function onDelta(frame) {
  if (!streaming) return;
  streaming.text += frame.content;
  if (!streaming.renderQueued) {
    streaming.renderQueued = true;
    const current = streaming;
    requestAnimationFrame(() => {
      current.renderQueued = false;
      const wasNearBottom = isNearBottom();
      renderMarkdown(current.element.querySelector(".body"), current.text);
      keepScrolled(wasNearBottom);
    });
  }
}

function onEnd(frame) {
  if (!streaming) return;
  const { element, text } = streaming;
  if (frame.message) element.dataset.id = frame.message;
  renderMarkdown(element.querySelector(".body"), text);
  setMeta(element, {
    status: frame.status,
    model: frame.model,
    error_code: frame.error?.code,
    error_message: frame.error?.message,
  });
  setStreaming(null);
  addFeedback(element);
  addAnswerCopy(element, text);
  if (frame.quota) {
    quota = frame.quota;
    updateMeter();
  }
}

function onError(frame) {
  if (unsentText !== null) {
    // The message was refused before it started: give the user their text back.
    if (editing) {
      // An edit: the question is as it was, the new text back in the composer to change or send again.
      editing.question.querySelector(".body").textContent = editing.original;
      editing.question.classList.remove("pending");
      editing.sent = false;
      editBanner.hidden = false;
    } else {
      thread.querySelector("article.message.user.pending:last-of-type")?.remove();
    }
    setPrompt(unsentText);
    unsentText = null;
    updateLastTurnButtons(); // the last answer is the last again: its Regenerate comes back
  }
  if (replacedAnswer) {
    replacedAnswer.hidden = false;
    replacedAnswer = null;
    updateLastTurnButtons();
  }
  if (LIMIT_CODES.has(frame.code) && frame.reset_at) {
    startLimit(frame);
  } else {
    showNotice(frame.message || "Something went wrong.");
  }
}

// ---- usage meter and limits --------------------------------------------------------------------------------

function resetDate(isoTime) {
  return new Date(isoTime).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function showBanner(text, kind) {
  limitBanner.textContent = text;
  limitBanner.className = `limit-banner ${kind}`;
  limitBanner.hidden = false;
}

function updateMeter() {
  usageMeter.querySelector("progress").max = quota.allowance;
  usageMeter.querySelector("progress").value = quota.used;
  const resets = new Date(quota.reset_at).toLocaleDateString(undefined, { month: "short", day: "numeric" });
  usageText.textContent = `${numbers.format(quota.used)} / ${numbers.format(quota.allowance)} tokens · resets ${resets}`;
  usageMeter.className = `usage-meter meter-${quota.level}`;
  usageMeter.title = `Tokens used this period; the allowance resets ${resetDate(quota.reset_at)}`;
  if (limitedUntil) return; // the limit's countdown has the banner
  const share = Math.floor((quota.used * 100) / Math.max(quota.allowance, 1));
  if (quota.level === "exhausted") {
    showBanner(`You have used this period's tokens. They reset ${resetDate(quota.reset_at)}.`, "error");
  } else if (quota.level === "warning") {
    showBanner(`You have used ${share}% of this period's tokens. They reset ${resetDate(quota.reset_at)}.`, "warn");
  } else {
    limitBanner.hidden = true;
  }
}

function waitText(seconds) {
  if (seconds < 60) return `in ${seconds} s`;
  if (seconds < 3600) return `in ${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return resetDate(limitedUntil);
}

function startLimit(frame) {
  limitedUntil = Date.parse(frame.reset_at);
  clearInterval(limitTimer);
  const tick = () => {
    const seconds = Math.ceil((limitedUntil - Date.now()) / 1000);
    if (seconds <= 0) {
      clearInterval(limitTimer);
      limitedUntil = 0;
      refreshSendButton();
      updateMeter();
      return;
    }
    showBanner(`${frame.message} You can send again ${waitText(seconds)}.`, "error");
  };
  tick();
  limitTimer = setInterval(tick, 1000);
  refreshSendButton();
}

function refreshSendButton() {
  sendButton.disabled = !connected || limitedUntil > Date.now() || tooLong();
}

// ---- the prompt's length: counted as the server counts it (Unicode code points), shown near the limit --------

function promptChars() {
  return [...prompt.value].length;
}

function tooLong() {
  return promptChars() > config.maxMessageChars;
}

function showPromptLength() {
  const chars = promptChars();
  const limit = config.maxMessageChars;
  promptLength.hidden = chars < limit * 0.9;
  if (chars > limit) {
    promptLength.className = "limit-banner error";
    promptLength.textContent = `${numbers.format(chars)} / ${numbers.format(limit)} characters: `
      + `shorten the message by ${numbers.format(chars - limit)} to send it.`;
  } else {
    promptLength.className = "limit-banner warn";
    promptLength.textContent = `${numbers.format(chars)} / ${numbers.format(limit)} characters`;
  }
  refreshSendButton();
}

// ---- composing ---------------------------------------------------------------------------------------------

function fillModels() {
  const saved = window.localStorage.getItem("aisaas.model");
  for (const id of config.models) {
    const option = document.createElement("option");
    option.value = id;
    option.textContent = config.demo ? `${id} (demo)` : id;
    modelSelect.append(option);
  }
  modelSelect.value = config.models.includes(saved) ? saved : config.defaultModel;
  modelSelect.addEventListener("change", () => window.localStorage.setItem("aisaas.model", modelSelect.value));
}

function submitMessage() {
  const content = prompt.value;
  if (!content.trim() || streaming || unsentText !== null || limitedUntil > Date.now() || tooLong()) return;
  if (editing) {
    sendEdit(content);
    return;
  }
  const frame = { type: "message", conversation: conversationId, content, model: modelSelect.value };
  if (!send(frame)) return;
  unsentText = content;
  addMessage({ role: "user", content, status: "pending" });
  setPrompt("");
  thread.querySelector("button.regenerate")?.remove();
}

function regenerate() {
  if (streaming || replacedAnswer || !conversationId) return;
  if (send({ type: "regenerate", conversation: conversationId, model: modelSelect.value })) {
    replacedAnswer = thread.querySelector("article.message.assistant:last-of-type");
    if (replacedAnswer) replacedAnswer.hidden = true;
  }
}

// What the composer holds, set from here: its height and its length count follow, as when the user types.
function setPrompt(text) {
  prompt.value = text;
  autoGrow();
  showPromptLength();
}

function autoGrow() {
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, 240)}px`;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  submitMessage();
});
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitMessage();
  }
});
prompt.addEventListener("input", () => {
  autoGrow();
  showPromptLength();
});
stopButton.addEventListener("click", () => send({ type: "stop" }));
// Escape closes the sidebar on a phone, or stops an answer as it streams, as the Stop button does (its title
// says so), or stops editing.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.isComposing) return;
  if (sidebar.classList.contains("open")) sidebar.classList.remove("open");
  else if (streaming) send({ type: "stop" });
  else if (editing && !editing.sent) cancelEdit();
});

// The composer's hint: the keys are for a keyboard; on a phone's width it would take three lines.
const narrowScreen = window.matchMedia("(max-width: 760px)");
function fitPlaceholder() {
  prompt.placeholder = narrowScreen.matches ? "Message aisaas…" : "Message aisaas… (Enter to send, Shift+Enter for a new line)";
}
narrowScreen.addEventListener("change", fitPlaceholder);

fitPlaceholder();
fillModels();
for (const message of config.messages) addMessage(message);
thread.scrollTop = thread.scrollHeight;
updateLastTurnButtons();
updateMeter();
refreshSendButton();
connect();
prompt.focus();

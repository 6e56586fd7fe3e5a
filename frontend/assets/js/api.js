// Talking to the studio's API: JSON in, JSON out, and one error type whose message is written for people.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the studio could not be reached)
   * @param {string} code stable error code, e.g. "not_owned"
   * @param {string} message what to tell the visitor
   * @param {number|null} retryAfter seconds, from the Retry-After header
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** A server message as a sentence for people: "wrong e-mail or password" -> "Wrong e-mail or password." */
export function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return t;
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?…)]$/.test(first) ? first : `${first}.`;
}

export const OFFLINE_MESSAGE = "Can't reach the studio right now. Check your connection and try again.";

/** The ApiError an unsuccessful response stands for (`{"error": {"code", "message"}}` bodies). */
export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `The studio answered with an error (${response.status}). Please try again.`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message ? sentence(body.error.message) : message;
    }
  } catch {
    // not JSON (a proxy's error page): keep the generic message
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(response.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}

/** fetch() that throws ApiError for network failures (AbortError passes through untouched). */
export async function request(path, { method = "GET", body, signal, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "offline", OFFLINE_MESSAGE);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** A JSON API call: the parsed body, or an ApiError. */
export async function api(path, options = {}) {
  const response = await request(path, options);
  try {
    return await response.json();
  } catch {
    throw new ApiError(response.status, "bad_response", "The studio sent an answer this page could not read.");
  }
}

export const getModels = () => api("/api/models");
export const purchase = (model) => api(`/api/models/purchase/${encodeURIComponent(model)}`, { method: "POST" });
export const install = (model) => api("/api/models/install", { method: "POST", body: { model } });
export const getPurchase = (id) => api(`/api/purchases/${encodeURIComponent(id)}`);

// Images attached to a chat message: read from the picker, a paste or a drop, checked as the server checks them
// (PNG, JPEG, WebP or GIF, at most 10 MB each and 4 a message), kept as base64 the way Ollama takes them.

export const MAX_IMAGES = 4;
export const MAX_IMAGE_BYTES = 10 * 1024 * 1024;
const TYPES = { "image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP", "image/gif": "GIF" };

/** The image's type from its first base64 characters (its bytes), for showing it again later. */
export function mimeOf(base64) {
  if (base64.startsWith("iVBORw0KGgo")) return "image/png";
  if (base64.startsWith("/9j/")) return "image/jpeg";
  if (base64.startsWith("R0lGOD")) return "image/gif";
  if (base64.startsWith("UklGR")) return "image/webp";
  return "application/octet-stream";
}

export function dataUrl(base64) {
  return `data:${mimeOf(base64)};base64,${base64}`;
}

/** {data (base64), name} for a File, or an Error saying why it can't be sent. */
export function readImage(file) {
  return new Promise((resolve, reject) => {
    if (!TYPES[file.type]) {
      reject(new Error(`${file.name || "This file"} is not a PNG, JPEG, WebP or GIF image.`));
      return;
    }
    if (file.size > MAX_IMAGE_BYTES) {
      reject(new Error(`${file.name || "This image"} is larger than 10 MB, the limit for one image.`));
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve({ data: url.slice(url.indexOf(",") + 1), name: file.name || "image" });
    };
    reader.onerror = () => reject(new Error(`${file.name || "The image"} could not be read.`));
    reader.readAsDataURL(file);
  });
}

/** The image files among a paste's or a drop's items. */
export function imageFiles(dataTransfer) {
  if (!dataTransfer) return [];
  return [...(dataTransfer.files || [])].filter((f) => f.type.startsWith("image/"));
}

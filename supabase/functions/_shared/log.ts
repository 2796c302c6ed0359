/**
 * One JSON object per line, so log drains can index fields. Callers pass identifiers and numbers
 * only: never tokens, request bodies, prompts or model output.
 */

export type LogFields = Record<string, string | number | boolean | null | undefined>;

function write(level: "info" | "warn" | "error", message: string, fields: LogFields) {
  const line = JSON.stringify({ level, msg: message, time: new Date().toISOString(), ...fields });
  if (level === "info") console.log(line);
  else console.error(line);
}

export const log = {
  info: (message: string, fields: LogFields = {}) => write("info", message, fields),
  warn: (message: string, fields: LogFields = {}) => write("warn", message, fields),
  error: (message: string, fields: LogFields = {}) => write("error", message, fields),
};

/** What a caught value says, for a log field: anything may be thrown, not only an Error. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

import type { Expo, ExpoPushMessage, ExpoPushReceipt, ExpoPushTicket } from "expo-server-sdk";
import type { Config } from "./config.ts";

/**
 * Expo push, through the official `expo-server-sdk`: the one way this backend checks a push
 * token, sends messages (chunked as the SDK chunks them, 100 to a request) and reads receipts.
 * The SDK is imported on first use, so functions that never push never load it. It reads
 * `EXPO_BASE_URL` from the environment itself when it loads (the tests point it at their local
 * push server); `config()` validates that value with every other setting.
 */

type Sdk = typeof import("expo-server-sdk");

let sdk: Promise<Sdk> | undefined;
let client: Expo | undefined;

function expoSdk(): Promise<Sdk> {
  sdk ??= import("expo-server-sdk").catch((error) => {
    sdk = undefined;
    throw error;
  });
  return sdk;
}

async function expo(c: Config): Promise<Expo> {
  const { Expo } = await expoSdk();
  client ??= new Expo({ accessToken: c.EXPO_ACCESS_TOKEN });
  return client;
}

/** Whether `token` is an Expo push token, by the SDK's own rule. */
export async function isExpoPushToken(token: string): Promise<boolean> {
  const { Expo } = await expoSdk();
  return Expo.isExpoPushToken(token);
}

/** Why Expo refused a request, by HTTP status: 429 and 5xx are worth retrying later. */
export function pushStatusOf(error: unknown): number | null {
  const status = (error as { statusCode?: unknown })?.statusCode;
  return typeof status === "number" ? status : null;
}

/**
 * Sends `messages`, chunk by chunk; `sent` hears each chunk's tickets (in the chunk's order)
 * as soon as Expo answers, so a later chunk's failure loses no earlier ticket.
 */
export async function sendPush(
  c: Config,
  messages: ExpoPushMessage[],
  sent: (chunk: ExpoPushMessage[], tickets: ExpoPushTicket[]) => Promise<void>,
): Promise<void> {
  const client = await expo(c);
  for (const chunk of client.chunkPushNotifications(messages)) {
    await sent(chunk, await client.sendPushNotificationsAsync(chunk));
  }
}

/** The receipts Expo has for `ids` (a receipt not ready yet is simply absent). */
export async function pushReceipts(
  c: Config,
  ids: string[],
): Promise<Record<string, ExpoPushReceipt>> {
  const client = await expo(c);
  const receipts: Record<string, ExpoPushReceipt> = {};
  for (const chunk of client.chunkPushNotificationReceiptIds(ids)) {
    Object.assign(receipts, await client.getPushNotificationReceiptsAsync(chunk));
  }
  return receipts;
}

import { createChatHandler } from "./handler.ts";

Deno.serve(createChatHandler());

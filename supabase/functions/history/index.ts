import { createHistoryHandler } from "./handler.ts";

Deno.serve(createHistoryHandler());

import { createUsageHandler } from "./handler.ts";

Deno.serve(createUsageHandler());

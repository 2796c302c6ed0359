import { createHealthHandler } from "./handler.ts";

Deno.serve(createHealthHandler());

import { createAnalyzeHandler } from "./handler.ts";

Deno.serve(createAnalyzeHandler());

import { createProcessJobsHandler } from "./handler.ts";

Deno.serve(createProcessJobsHandler());

import { createUploadsHandler } from "./handler.ts";

Deno.serve(createUploadsHandler());

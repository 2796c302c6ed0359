import { createProfileHandler } from "./handler.ts";

Deno.serve(createProfileHandler());

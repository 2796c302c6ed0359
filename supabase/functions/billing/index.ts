import { serve } from "../_shared/serve.ts";

serve(() => import("./handler.ts"));

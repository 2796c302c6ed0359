import { analyzeWithModel, type ModelCall, type ModelInput } from "./ai.ts";
import type { AnalysisResult, AnalyzeInput } from "./contracts.ts";
import type { Config } from "./config.ts";
import { ANALYSIS_URL_SECONDS, createDownloadUrl } from "./storage.ts";

/**
 * The model side of one analysis, shared by `analyze` (in the request) and the `ai.analyze` job
 * (in the background), so both call the model the same way.
 */

/**
 * What is hashed, sent to the model and stored: equal requests must look equal. A Storage
 * object's version is part of it, so a replaced object is not answered with the old one's result.
 */
export type HashedInput =
  | AnalyzeInput
  | (Extract<AnalyzeInput, { kind: "storage" }> & { version: string });

export interface AnalysisRequest {
  analysisType: string;
  input: HashedInput;
}

/**
 * The model's analysis of `request`. A Storage object reaches the model through a URL signed
 * for `ANALYSIS_URL_SECONDS`, made only now, once the unit is taken: never a key, never public.
 */
export async function analyzeRequest(
  config: Config,
  request: AnalysisRequest,
  call: ModelCall,
): Promise<AnalysisResult> {
  const { input } = request;
  const modelInput: ModelInput = input.kind === "storage"
    ? {
      kind: "image_url",
      url: await createDownloadUrl(config, input.bucket, input.path, ANALYSIS_URL_SECONDS),
    }
    : input;
  return await analyzeWithModel(config, { ...request, input: modelInput }, call);
}

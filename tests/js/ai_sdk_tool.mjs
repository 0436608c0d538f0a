// One Vercel AI SDK tool loop against an OpenAI-compatible base URL, as an app
// would write it; tests/clients/test_ai_sdk.py runs it and reads its output.
//
// Settings come from the environment: FOREBAY_BASE_URL, FOREBAY_KEY, MODEL,
// API ("chat": openai.chat(model), Chat Completions; "default": openai(model),
// the provider's default, the Responses API), CALL ("generate" or "stream"),
// SECRET_WORD (what the tool returns: the answer can only hold it if the tool
// ran and its result went back to the model). Prints one JSON object; exits 1
// with {"error": ...} if the SDK throws.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const env = process.env;
const openai = createOpenAI({ baseURL: env.FOREBAY_BASE_URL, apiKey: env.FOREBAY_KEY });
const model = env.API === "chat" ? openai.chat(env.MODEL) : openai(env.MODEL);

const ran = [];
const tools = {
  lookup_word: tool({
    description: "Look up the secret word kept under a key.",
    inputSchema: z.object({ key: z.string().describe("where the word is kept") }),
    execute: async ({ key }) => {
      ran.push(key);
      return { key, word: env.SECRET_WORD };
    },
  }),
};
const request = {
  model,
  tools,
  prompt: "What is the secret word under the key 'note'? Use the tool.",
  stopWhen: stepCountIs(3),
  maxRetries: 0,
};

async function main() {
  let result;
  if (env.CALL === "stream") {
    let failed;
    const stream = streamText({ ...request, onError: ({ error }) => { failed ??= error; } });
    let streamed = "";
    for await (const piece of stream.textStream) streamed += piece;
    if (failed) throw failed; // the SDK's own error, not its "no output" summary
    result = {
      text: await stream.text,
      streamed,
      steps: (await stream.steps).length,
      finishReason: await stream.finishReason,
      usage: await stream.totalUsage,
    };
  } else {
    const done = await generateText(request);
    result = {
      text: done.text,
      steps: done.steps.length,
      finishReason: done.finishReason,
      usage: done.totalUsage,
    };
  }
  console.log(JSON.stringify({ ...result, ran }));
}

main().catch((error) => {
  const detail = { name: error?.name, message: String(error?.message ?? error) };
  if (error?.statusCode) detail.statusCode = error.statusCode;
  if (error?.responseBody) detail.responseBody = String(error.responseBody).slice(0, 2000);
  console.log(JSON.stringify({ error: detail, ran }));
  process.exit(1);
});

// Uploads files to plugs-api with tus-js-client (npm), unchanged, for `cargo xtask ci tus`.
//
//     node upload.mjs ENDPOINT CHUNK_SIZE FILE...
//
// The bearer token comes from $TUS_TOKEN; tus-js-client is loaded from $TUS_JS_DIR (the npm
// prefix xtask installed it into). Prints one line per file: `PATH MEDIA_ID`, the media id the
// server named in `Upload-Media-Id` of its last answer. Every other file sends its first chunk
// with the creation request (creation-with-upload).
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(`${process.env.TUS_JS_DIR}/`);
const tus = require("tus-js-client");

const [endpoint, chunkSizeText, ...files] = process.argv.slice(2);
const chunkSize = Number(chunkSizeText);

function upload(path, withCreation) {
  return new Promise((resolve, reject) => {
    let mediaId = null;
    const upload = new tus.Upload(readFileSync(path), {
      endpoint,
      chunkSize,
      headers: { Authorization: `Bearer ${process.env.TUS_TOKEN}` },
      metadata: { filename: basename(path), filetype: "image/png" },
      uploadDataDuringCreation: withCreation,
      retryDelays: [0, 100, 500],
      onAfterResponse(_request, response) {
        const id = response.getHeader("Upload-Media-Id");
        if (id) mediaId = id;
      },
      onError: reject,
      onSuccess() {
        if (mediaId) resolve(mediaId);
        else reject(new Error(`${path}: the last answer named no Upload-Media-Id`));
      },
    });
    upload.start();
  });
}

let index = 0;
for (const path of files) {
  const mediaId = await upload(path, index % 2 === 1);
  console.log(`${path} ${mediaId}`);
  index += 1;
}

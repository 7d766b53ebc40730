// Runs docs/network.js in Node for the tests, on images the test wrote as little-endian float64.
//   node tests/network_cli.js forward WEIGHTS.json IMAGES.f64        -> {"logits": [[10 numbers], ...]}
//   node tests/network_cli.js prepare IMAGES.f64 HEIGHT WIDTH        -> {"prepared": [[784] or null, ...],
//                                                                        "downscaled": [[784], ...]}
"use strict";
const fs = require("fs");
const path = require("path");
const Network = require(path.join(__dirname, "..", "docs", "network.js"));

function readImages(file, size) {
  const bytes = fs.readFileSync(file);
  const values = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8);
  const images = [];
  for (let start = 0; start < values.length; start += size) images.push(values.subarray(start, start + size));
  return images;
}

const [command, ...args] = process.argv.slice(2);
if (command === "forward") {
  const network = Network.loadNetwork(JSON.parse(fs.readFileSync(args[0], "utf8")));
  const logits = readImages(args[1], Network.SIZE * Network.SIZE).map((image) => Array.from(Network.forward(network, image).logits));
  process.stdout.write(JSON.stringify({ logits }));
} else if (command === "prepare") {
  const [height, width] = [Number(args[1]), Number(args[2])];
  const drawings = readImages(args[0], height * width);
  const prepared = drawings.map((ink) => {
    const image = Network.prepareLikeMnist(ink, height, width);
    return image === null ? null : Array.from(image);
  });
  const downscaled = drawings.map((ink) => Array.from(Network.downscale(ink, height, width)));
  process.stdout.write(JSON.stringify({ prepared, downscaled }));
} else {
  process.stderr.write("usage: node tests/network_cli.js forward WEIGHTS IMAGES | prepare IMAGES HEIGHT WIDTH\n");
  process.exit(2);
}

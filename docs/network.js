// The trained network's forward pass and MNIST's preparation of a drawing, in plain JavaScript.
// The page (index.html) uses it in the browser; the tests run it in Node against PyTorch.
// Images are {channels, height, width, data: Float64Array}, the data channel by channel, row by row.
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.Network = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const FORMAT = "s6-mnist-net/1"; // the weight-file layout this code reads (docs/weights_format.py writes it)
  const SIZE = 28; // MNIST's images are 28x28
  const MNIST_BOX = 20; // MNIST fitted each digit's ink into 20x20, then centred it in 28x28
  const INK_THRESHOLD = 0.1; // fainter pixels do not count as ink when finding the digit's extent
  const MNIST_MEAN = 0.1307, MNIST_STD = 0.3081; // the normalisation the network was trained with
  const NUM_CLASSES = 10; // one score per digit

  // The numbers of one tensor of the file (base64, little-endian float32), checked: as many as its shape
  // needs, and all finite, since one NaN or Infinity would make every score the page shows NaN.
  function decodeFloats(entry, name) {
    if (!Array.isArray(entry.shape) || typeof entry.data !== "string") {
      throw new Error(`${name} needs a "shape" list and base64 "data"`);
    }
    const bytes = Uint8Array.from(atob(entry.data), (c) => c.charCodeAt(0));
    const expected = entry.shape.reduce((a, b) => a * b, 1);
    if (bytes.length !== 4 * expected) {
      throw new Error(`${name}: a tensor of shape [${entry.shape}] needs ${expected} numbers ` +
                      `(${4 * expected} bytes), the file has ${bytes.length} bytes`);
    }
    const values = new Float32Array(bytes.buffer); // little-endian, as every current browser and Node
    const bad = values.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new Error(`${name} holds ${values[bad]} at position ${bad}, expected only finite numbers`);
    return values;
  }

  // A conv's weight is [out channels, in channels, kernel, kernel], a linear's [out features, in features].
  function checkWeightShape(layer, name) {
    const shape = layer.weight ? layer.weight.shape : null;
    const isConv = layer.kind === "conv";
    const fits = Array.isArray(shape) && (isConv ? shape.length === 4 && shape[2] === shape[3] : shape.length === 2);
    if (!fits) {
      throw new Error(`${name} needs a weight of shape ${isConv ? "[out, in, kernel, kernel]" : "[out, in]"}, ` +
                      `the file has ${shape ? `[${shape}]` : "none"}`);
    }
  }

  // Follow a 1x28x28 image through the layers, tracking its channels and side, so that a file whose layers
  // do not fit together (one missing, one of the wrong width) is refused on loading rather than giving NaN
  // or a crash half-way through a forward pass. Layers are numbered from 0, as in the file's "layers" list.
  function checkLayersChain(layers) {
    let channels = 1, side = SIZE, averaged = false, previous = "the 1x28x28 input";
    layers.forEach((layer, index) => {
      const name = `layer ${index} (${layer.kind})`;
      // A conv or linear layer must read what the layer before gives; the layers after read its outputs.
      const connect = (inputs, outputs, unit) => {
        if (inputs !== channels) throw new Error(`${name} reads ${inputs} ${unit}, but ${previous} gives ${channels}`);
        if (layer.bias && layer.bias.length !== outputs) {
          throw new Error(`${name} gives ${outputs} ${unit}, but its bias has ${layer.bias.length} numbers`);
        }
        channels = outputs;
      };
      const sideBefore = side;
      if (layer.kind === "conv") {
        connect(layer.inChannels, layer.outChannels, "channels");
        side += 2 * layer.padding - layer.kernel + 1;
      } else if (layer.kind === "maxpool") {
        side = Math.floor(side / layer.size);
      } else if (layer.kind === "mean") {
        side = 1;
        averaged = true;
      } else {
        // The forward pass feeds a linear layer's output to nothing: it must come last, after the mean.
        if (!averaged || index !== layers.length - 1) throw new Error(`${name} must be the last layer, after a mean`);
        connect(layer.inFeatures, layer.outFeatures, "features");
      }
      if (!(side >= 1)) {
        throw new Error(`${name} turns ${sideBefore}x${sideBefore} feature maps into ${side}x${side}, ` +
                        "expected at least 1x1");
      }
      previous = "the layer before";
    });
    const last = layers[layers.length - 1], lastName = `layer ${layers.length - 1} (${last.kind})`;
    if (last.kind !== "linear") {
      throw new Error(`the last layer must be a linear one giving ${NUM_CLASSES} class scores, ${lastName} is not`);
    }
    if (last.outFeatures !== NUM_CLASSES) {
      throw new Error(`${lastName} gives ${last.outFeatures} class scores, expected ${NUM_CLASSES}, one per digit`);
    }
  }

  // Check a parsed weight file and decode its tensors; throws an Error that says what does not match.
  function loadNetwork(weights) {
    if (!weights || weights.format !== FORMAT) {
      throw new Error(`this page reads weight files of format "${FORMAT}", ` +
                      `this one is ${weights && weights.format ? `"${weights.format}"` : "of no known format"}`);
    }
    if (!Array.isArray(weights.layers) || !weights.layers.length) throw new Error("the weight file has no layers");
    const kinds = ["conv", "maxpool", "mean", "linear"];
    const layers = weights.layers.map((layer, index) => {
      const name = `layer ${index} (${layer.kind})`;
      if (!kinds.includes(layer.kind)) throw new Error(`${name}: unknown kind, expected one of ${kinds.join(", ")}`);
      const out = Object.assign({}, layer);
      if (layer.kind === "conv" || layer.kind === "linear") checkWeightShape(layer, name);
      if (layer.weight) out.weight = decodeFloats(layer.weight, `${name} weight`);
      if (layer.bias) out.bias = decodeFloats(layer.bias, `${name} bias`);
      if (layer.kind === "conv") [out.outChannels, out.inChannels, out.kernel] = layer.weight.shape;
      if (layer.kind === "linear") [out.outFeatures, out.inFeatures] = layer.weight.shape;
      return out;
    });
    checkLayersChain(layers);
    // A layer that keeps the channels (a 16 -> 16 convolution) can go missing without breaking the chain;
    // the count of numbers the file records still tells.
    const numbers = layers.reduce(
      (sum, layer) => sum + (layer.weight ? layer.weight.length : 0) + (layer.bias ? layer.bias.length : 0), 0);
    if (numbers !== weights.folded_parameters) {
      throw new Error(`the layers hold ${numbers} numbers, but the file's folded_parameters says ` +
                      `${weights.folded_parameters}: a layer is missing, extra or changed`);
    }
    return Object.assign({}, weights, { layers });
  }

  // What the file says about the network, for the page to show: test_accuracy and parameters are optional,
  // each shown only when it is a number.
  function describeNetwork(network) {
    const facts = [];
    if (Number.isFinite(network.parameters)) facts.push(`${network.parameters.toLocaleString("en")} parameters`);
    if (Number.isFinite(network.test_accuracy)) {
      facts.push(`${network.test_accuracy.toFixed(2)}% on MNIST's test digits`);
    }
    return facts.join(", ");
  }

  // A convolution with zero padding, stride 1, then ReLU where the layer says so.
  function conv(x, layer) {
    const { outChannels, inChannels, kernel, padding, weight, bias } = layer;
    if (x.channels !== inChannels) throw new Error(`a convolution expected ${inChannels} channels, got ${x.channels}`);
    const height = x.height + 2 * padding - kernel + 1, width = x.width + 2 * padding - kernel + 1;
    const out = new Float64Array(outChannels * height * width);
    for (let o = 0; o < outChannels; o++) {
      const plane = out.subarray(o * height * width, (o + 1) * height * width);
      plane.fill(bias ? bias[o] : 0);
      for (let i = 0; i < inChannels; i++) {
        const input = x.data.subarray(i * x.height * x.width, (i + 1) * x.height * x.width);
        for (let ky = 0; ky < kernel; ky++) {
          for (let kx = 0; kx < kernel; kx++) {
            const w = weight[((o * inChannels + i) * kernel + ky) * kernel + kx];
            // Output (y, x) reads input (y + ky - padding, x + kx - padding); outside the image it reads 0.
            const y0 = Math.max(0, padding - ky), y1 = Math.min(height, x.height + padding - ky);
            const x0 = Math.max(0, padding - kx), x1 = Math.min(width, x.width + padding - kx);
            for (let y = y0; y < y1; y++) {
              const row = (y + ky - padding) * x.width + kx - padding;
              for (let c = x0; c < x1; c++) plane[y * width + c] += w * input[row + c];
            }
          }
        }
      }
      if (layer.relu) for (let k = 0; k < plane.length; k++) plane[k] = Math.max(0, plane[k]);
    }
    return { channels: outChannels, height, width, data: out };
  }

  // Max over each size x size window (stride = size); rows and columns left over are dropped, as in PyTorch.
  function maxPool(x, size) {
    const height = Math.floor(x.height / size), width = Math.floor(x.width / size);
    const out = new Float64Array(x.channels * height * width);
    for (let c = 0; c < x.channels; c++) {
      for (let y = 0; y < height; y++) {
        for (let w = 0; w < width; w++) {
          let best = -Infinity;
          for (let dy = 0; dy < size; dy++) {
            for (let dx = 0; dx < size; dx++) {
              best = Math.max(best, x.data[(c * x.height + y * size + dy) * x.width + w * size + dx]);
            }
          }
          out[(c * height + y) * width + w] = best;
        }
      }
    }
    return { channels: x.channels, height, width, data: out };
  }

  // Global average pooling: one number per channel.
  function mean(x) {
    const out = new Float64Array(x.channels);
    const area = x.height * x.width;
    for (let c = 0; c < x.channels; c++) {
      let sum = 0;
      for (let k = 0; k < area; k++) sum += x.data[c * area + k];
      out[c] = sum / area;
    }
    return { channels: x.channels, height: 1, width: 1, data: out };
  }

  function linear(x, layer) {
    const out = new Float64Array(layer.outFeatures);
    for (let o = 0; o < layer.outFeatures; o++) {
      let sum = layer.bias ? layer.bias[o] : 0;
      for (let i = 0; i < layer.inFeatures; i++) sum += layer.weight[o * layer.inFeatures + i] * x.data[i];
      out[o] = sum;
    }
    return out;
  }

  function softmax(logits) {
    const top = Math.max(...logits);
    const exps = Array.from(logits, (v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / total);
  }

  // Run a 28x28 image of ink values in [0, 1] through the network. Returns the logits, the probabilities
  // and the feature maps at the end of each resolution stage (28x28, 14x14, 7x7).
  function forward(network, image) {
    if (image.length !== SIZE * SIZE) throw new Error(`expected a 28x28 image (784 values), got ${image.length}`);
    let x = { channels: 1, height: SIZE, width: SIZE,
              data: Float64Array.from(image, (v) => (v - MNIST_MEAN) / MNIST_STD) };
    const stages = [];
    let logits = null;
    for (const layer of network.layers) {
      if (layer.kind === "conv") x = conv(x, layer);
      else if (layer.kind === "maxpool") x = maxPool(x, layer.size);
      else if (layer.kind === "mean") x = mean(x);
      else logits = linear(x, layer);
      if (layer.stage_end) stages.push(x);
    }
    return { logits, probabilities: softmax(logits), stages };
  }

  // Row i of the result averages the input pixels that output pixel i covers, each weighted by the
  // fraction of it inside (a box filter: anti-aliased when shrinking). As utils._area_weights.
  function areaWeights(sizeIn, sizeOut) {
    const rows = [];
    for (let i = 0; i < sizeOut; i++) {
      const start = (i * sizeIn) / sizeOut, end = ((i + 1) * sizeIn) / sizeOut;
      const row = new Float64Array(sizeIn);
      for (let j = Math.floor(start); j < Math.min(sizeIn, Math.ceil(end)); j++) {
        row[j] = Math.max(0, Math.min(end, j + 1) - Math.max(start, j)) / (sizeIn / sizeOut);
      }
      rows.push(row);
    }
    return rows;
  }

  // Resize an image (Float64Array, height x width) by area averaging: rows first, then columns.
  function areaResize(image, height, width, newHeight, newWidth) {
    const rowWeights = areaWeights(height, newHeight), columnWeights = areaWeights(width, newWidth);
    const rowsDone = new Float64Array(newHeight * width);
    for (let i = 0; i < newHeight; i++) {
      for (let j = 0; j < height; j++) {
        const w = rowWeights[i][j];
        if (w === 0) continue;
        for (let c = 0; c < width; c++) rowsDone[i * width + c] += w * image[j * width + c];
      }
    }
    const out = new Float64Array(newHeight * newWidth);
    for (let i = 0; i < newHeight; i++) {
      for (let k = 0; k < newWidth; k++) {
        let sum = 0;
        for (let c = 0; c < width; c++) sum += columnWeights[k][c] * rowsDone[i * width + c];
        out[i * newWidth + k] = sum;
      }
    }
    return out;
  }

  // A drawing shrunk to 28x28 as it stands: no cropping, no centring.
  function downscale(ink, height, width) {
    return areaResize(ink, height, width, SIZE, SIZE);
  }

  // A drawing (ink values in [0, 1], height x width) prepared as MNIST's digits were: cropped to its ink,
  // shrunk keeping its aspect ratio until the longer side is 20 pixels, and placed in 28x28 with its centre
  // of mass at the centre. Returns null for a drawing with no ink. As utils.prepare_like_mnist.
  function prepareLikeMnist(ink, height, width) {
    let top = height, bottom = -1, left = width, right = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (ink[y * width + x] > INK_THRESHOLD) {
          top = Math.min(top, y); bottom = Math.max(bottom, y);
          left = Math.min(left, x); right = Math.max(right, x);
        }
      }
    }
    if (bottom < 0) return null;
    const cropHeight = bottom - top + 1, cropWidth = right - left + 1;
    const crop = new Float64Array(cropHeight * cropWidth);
    for (let y = 0; y < cropHeight; y++) {
      for (let x = 0; x < cropWidth; x++) crop[y * cropWidth + x] = ink[(top + y) * width + left + x];
    }
    const scale = MNIST_BOX / Math.max(cropHeight, cropWidth);
    const digitHeight = Math.max(1, Math.floor(cropHeight * scale + 0.5));
    const digitWidth = Math.max(1, Math.floor(cropWidth * scale + 0.5));
    const digit = areaResize(crop, cropHeight, cropWidth, digitHeight, digitWidth);
    let mass = 0, rowMoment = 0, columnMoment = 0;
    for (let y = 0; y < digitHeight; y++) {
      for (let x = 0; x < digitWidth; x++) {
        const v = digit[y * digitWidth + x];
        mass += v; rowMoment += y * v; columnMoment += x * v;
      }
    }
    // Put the centre of mass on the middle of the 28x28 field (pixel coordinate 13.5), to the nearest pixel.
    const shiftY = Math.floor(14 - rowMoment / mass), shiftX = Math.floor(14 - columnMoment / mass);
    const image = new Float64Array(SIZE * SIZE);
    for (let y = 0; y < digitHeight; y++) {
      for (let x = 0; x < digitWidth; x++) {
        const row = y + shiftY, column = x + shiftX;
        if (row >= 0 && row < SIZE && column >= 0 && column < SIZE) {
          image[row * SIZE + column] = Math.min(1, Math.max(0, digit[y * digitWidth + x]));
        }
      }
    }
    return image;
  }

  return { FORMAT, SIZE, loadNetwork, describeNetwork, forward, prepareLikeMnist, downscale, areaResize, softmax };
});

"""A subset of Caffe's ``caffe.proto``, built at run time (no protoc, no generated ``_pb2``).

The schema below is a transcription of the public facts of BVLC/caffe's
``src/caffe/proto/caffe.proto`` (message names, field names, numbers, types and
defaults) for the messages mapspec needs: ``NetParameter`` (new ``layer`` list and the
legacy V1 ``layers``), ``LayerParameter``, ``V1LayerParameter`` with its ``LayerType``
enum, ``BlobProto``/``BlobShape`` and the ``*_param`` messages of the layers mapspec
reads, shapes and runs, plus the parameters of BVLC's data, loss and other layers (so
that ``prototxt.dump(prototxt.load_net(text))`` keeps a train/val net whole).  Two fork
extensions are included:

* Tongcheng/caffe's efficient-DenseNet ``DenseBlockParameter`` (``denseblock_param``,
  LayerParameter field 147).  BVLC later gave 147 to ``swish_param``; mapspec does not
  support Swish, so the number is used for DenseBlock.
* ``PoolingParameter.ceil_mode`` (a bool, default true) from the forks that predate
  BVLC's ``round_mode`` (which took field 13).  Such forks put ``ceil_mode`` at 13 too,
  with the opposite meaning of ``round_mode``'s enum value, so it cannot share the number
  here: it lives at 1013, which only matters for text prototxts (where the field name
  decides).  In a binary caffemodel, field 13 is read as ``round_mode``; a caffemodel
  written by mapspec keeps a template's ``ceil_mode`` at 1013, a field any Caffe skips.
  (Field 13 is ``ceil_mode`` in BVLC PR 3057, commit aed992e, and in OpenCV's
  ``opencv-caffe.proto``; ``round_mode`` = 13 is BVLC master, PR 6282.)

Messages are built into a private descriptor pool, so a user's own ``caffe_pb2`` (in the
default pool) never clashes with these classes.  Text prototxts are parsed with
protobuf's ``text_format`` allowing unknown fields; :func:`parse_text` also returns
the names of the fields it skipped, per layer, so that a layer whose parameters were
not understood can be reported instead of silently misread.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from ..errors import FormatError

PACKAGE = "caffe"

# The schema, in .proto syntax (proto2).  Comments name anything that is not BVLC.
SCHEMA = """
message BlobShape {
  repeated int64 dim = 1 [packed = true];
}
message BlobProto {
  optional BlobShape shape = 7;
  repeated float data = 5 [packed = true];
  repeated float diff = 6 [packed = true];
  repeated double double_data = 8 [packed = true];
  repeated double double_diff = 9 [packed = true];
  optional int32 num = 1 [default = 0];
  optional int32 channels = 2 [default = 0];
  optional int32 height = 3 [default = 0];
  optional int32 width = 4 [default = 0];
}
message FillerParameter {
  optional string type = 1 [default = constant];
  optional float value = 2 [default = 0];
  optional float min = 3 [default = 0];
  optional float max = 4 [default = 1];
  optional float mean = 5 [default = 0];
  optional float std = 6 [default = 1];
  optional int32 sparse = 7 [default = -1];
  enum VarianceNorm { FAN_IN = 0; FAN_OUT = 1; AVERAGE = 2; }
  optional VarianceNorm variance_norm = 8 [default = FAN_IN];
}
enum Phase { TRAIN = 0; TEST = 1; }
message NetState {
  optional Phase phase = 1 [default = TEST];
  optional int32 level = 2 [default = 0];
  repeated string stage = 3;
}
message NetStateRule {
  optional Phase phase = 1;
  optional int32 min_level = 2;
  optional int32 max_level = 3;
  repeated string stage = 4;
  repeated string not_stage = 5;
}
message NetParameter {
  optional string name = 1;
  repeated string input = 3;
  repeated BlobShape input_shape = 8;
  repeated int32 input_dim = 4;
  optional bool force_backward = 5 [default = false];
  optional NetState state = 6;
  optional bool debug_info = 7 [default = false];
  repeated LayerParameter layer = 100;
  repeated V1LayerParameter layers = 2;
}
message ParamSpec {
  optional string name = 1;
  enum DimCheckMode { STRICT = 0; PERMISSIVE = 1; }
  optional DimCheckMode share_mode = 2;
  optional float lr_mult = 3 [default = 1.0];
  optional float decay_mult = 4 [default = 1.0];
}
message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated string bottom = 3;
  repeated string top = 4;
  optional Phase phase = 10;
  repeated float loss_weight = 5;
  repeated ParamSpec param = 6;
  repeated BlobProto blobs = 7;
  repeated bool propagate_down = 11;
  repeated NetStateRule include = 8;
  repeated NetStateRule exclude = 9;
  optional TransformationParameter transform_param = 100;
  optional LossParameter loss_param = 101;
  optional AccuracyParameter accuracy_param = 102;
  optional ArgMaxParameter argmax_param = 103;
  optional BatchNormParameter batch_norm_param = 139;
  optional BiasParameter bias_param = 141;
  optional ClipParameter clip_param = 148;
  optional ConcatParameter concat_param = 104;
  optional ConvolutionParameter convolution_param = 106;
  optional CropParameter crop_param = 144;
  optional DropoutParameter dropout_param = 108;
  optional EltwiseParameter eltwise_param = 110;
  optional ELUParameter elu_param = 140;
  optional EmbedParameter embed_param = 137;
  optional ExpParameter exp_param = 111;
  optional FlattenParameter flatten_param = 135;
  optional InnerProductParameter inner_product_param = 117;
  optional InputParameter input_param = 143;
  optional LogParameter log_param = 134;
  optional LRNParameter lrn_param = 118;
  optional PoolingParameter pooling_param = 121;
  optional PowerParameter power_param = 122;
  optional PReLUParameter prelu_param = 131;
  optional ReLUParameter relu_param = 123;
  optional ReshapeParameter reshape_param = 133;
  optional ScaleParameter scale_param = 142;
  optional SigmoidParameter sigmoid_param = 124;
  optional SoftmaxParameter softmax_param = 125;
  optional SliceParameter slice_param = 126;
  optional TanHParameter tanh_param = 127;
  optional ThresholdParameter threshold_param = 128;
  // Data, loss and other layers mapspec neither shapes nor runs: in the schema so that a
  // train/val prototxt keeps them through load_net -> dump.
  optional ContrastiveLossParameter contrastive_loss_param = 105;
  optional DataParameter data_param = 107;
  optional DummyDataParameter dummy_data_param = 109;
  optional HDF5DataParameter hdf5_data_param = 112;
  optional HDF5OutputParameter hdf5_output_param = 113;
  optional HingeLossParameter hinge_loss_param = 114;
  optional ImageDataParameter image_data_param = 115;
  optional InfogainLossParameter infogain_loss_param = 116;
  optional MemoryDataParameter memory_data_param = 119;
  optional MVNParameter mvn_param = 120;
  optional WindowDataParameter window_data_param = 129;
  optional PythonParameter python_param = 130;
  optional SPPParameter spp_param = 132;
  optional ReductionParameter reduction_param = 136;
  optional TileParameter tile_param = 138;
  optional ParameterParameter parameter_param = 145;
  optional RecurrentParameter recurrent_param = 146;
  // Tongcheng/caffe (efficient DenseNet); BVLC uses 147 for swish_param.
  optional DenseBlockParameter denseblock_param = 147;
}
message ContrastiveLossParameter {
  optional float margin = 1 [default = 1.0];
  optional bool legacy_version = 2 [default = false];
}
message DataParameter {
  enum DB { LEVELDB = 0; LMDB = 1; }
  optional string source = 1;
  optional uint32 batch_size = 4;
  optional uint32 rand_skip = 7 [default = 0];
  optional DB backend = 8 [default = LEVELDB];
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional bool force_encoded_color = 9 [default = false];
  optional uint32 prefetch = 10 [default = 4];
}
message DummyDataParameter {
  repeated FillerParameter data_filler = 1;
  repeated BlobShape shape = 6;
  repeated uint32 num = 2;
  repeated uint32 channels = 3;
  repeated uint32 height = 4;
  repeated uint32 width = 5;
}
message HDF5DataParameter {
  optional string source = 1;
  optional uint32 batch_size = 2;
  optional bool shuffle = 3 [default = false];
}
message HDF5OutputParameter {
  optional string file_name = 1;
}
message HingeLossParameter {
  enum Norm { L1 = 1; L2 = 2; }
  optional Norm norm = 1 [default = L1];
}
message ImageDataParameter {
  optional string source = 1;
  optional uint32 batch_size = 4 [default = 1];
  optional uint32 rand_skip = 7 [default = 0];
  optional bool shuffle = 8 [default = false];
  optional uint32 new_height = 9 [default = 0];
  optional uint32 new_width = 10 [default = 0];
  optional bool is_color = 11 [default = true];
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional string root_folder = 12;
}
message InfogainLossParameter {
  optional string source = 1;
  optional int32 axis = 2 [default = 1];
}
message MemoryDataParameter {
  optional uint32 batch_size = 1;
  optional uint32 channels = 2;
  optional uint32 height = 3;
  optional uint32 width = 4;
}
message MVNParameter {
  optional bool normalize_variance = 1 [default = true];
  optional bool across_channels = 2 [default = false];
  optional float eps = 3 [default = 1e-9];
}
message WindowDataParameter {
  optional string source = 1;
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 batch_size = 4;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional float fg_threshold = 7 [default = 0.5];
  optional float bg_threshold = 8 [default = 0.5];
  optional float fg_fraction = 9 [default = 0.25];
  optional uint32 context_pad = 10 [default = 0];
  optional string crop_mode = 11 [default = warp];
  optional bool cache_images = 12 [default = false];
  optional string root_folder = 13;
}
message PythonParameter {
  optional string module = 1;
  optional string layer = 2;
  optional string param_str = 3;
  optional bool share_in_parallel = 4 [default = false];
}
message SPPParameter {
  enum PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
  optional uint32 pyramid_height = 1;
  optional PoolMethod pool = 2 [default = MAX];
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 6 [default = DEFAULT];
}
message ReductionParameter {
  enum ReductionOp { SUM = 1; ASUM = 2; SUMSQ = 3; MEAN = 4; }
  optional ReductionOp operation = 1 [default = SUM];
  optional int32 axis = 2 [default = 0];
  optional float coeff = 3 [default = 1.0];
}
message TileParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 tiles = 2;
}
message ParameterParameter {
  optional BlobShape shape = 1;
}
message RecurrentParameter {
  optional uint32 num_output = 1 [default = 0];
  optional FillerParameter weight_filler = 2;
  optional FillerParameter bias_filler = 3;
  optional bool debug_info = 4 [default = false];
  optional bool expose_hidden = 5 [default = false];
}
message TransformationParameter {
  optional float scale = 1 [default = 1];
  optional bool mirror = 2 [default = false];
  optional uint32 crop_size = 3 [default = 0];
  optional string mean_file = 4;
  repeated float mean_value = 5;
  optional bool force_color = 6 [default = false];
  optional bool force_gray = 7 [default = false];
}
message LossParameter {
  optional int32 ignore_label = 1;
  enum NormalizationMode { FULL = 0; VALID = 1; BATCH_SIZE = 2; NONE = 3; }
  optional NormalizationMode normalization = 3 [default = VALID];
  optional bool normalize = 2;
}
message AccuracyParameter {
  optional uint32 top_k = 1 [default = 1];
  optional int32 axis = 2 [default = 1];
  optional int32 ignore_label = 3;
}
message ArgMaxParameter {
  optional bool out_max_val = 1 [default = false];
  optional uint32 top_k = 2 [default = 1];
  optional int32 axis = 3;
}
message ClipParameter {
  optional float min = 1;
  optional float max = 2;
}
message ConcatParameter {
  optional int32 axis = 2 [default = 1];
  optional uint32 concat_dim = 1 [default = 1];
}
message BatchNormParameter {
  optional bool use_global_stats = 1;
  optional float moving_average_fraction = 2 [default = 0.999];
  optional float eps = 3 [default = 1e-5];
}
message BiasParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 num_axes = 2 [default = 1];
  optional FillerParameter filler = 3;
}
message ConvolutionParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  repeated uint32 pad = 3;
  repeated uint32 kernel_size = 4;
  repeated uint32 stride = 6;
  repeated uint32 dilation = 18;
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_h = 11;
  optional uint32 kernel_w = 12;
  optional uint32 stride_h = 13;
  optional uint32 stride_w = 14;
  optional uint32 group = 5 [default = 1];
  optional FillerParameter weight_filler = 7;
  optional FillerParameter bias_filler = 8;
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 15 [default = DEFAULT];
  optional int32 axis = 16 [default = 1];
  optional bool force_nd_im2col = 17 [default = false];
}
message CropParameter {
  optional int32 axis = 1 [default = 2];
  repeated uint32 offset = 2;
}
message DropoutParameter {
  optional float dropout_ratio = 1 [default = 0.5];
}
message EltwiseParameter {
  enum EltwiseOp { PROD = 0; SUM = 1; MAX = 2; }
  optional EltwiseOp operation = 1 [default = SUM];
  repeated float coeff = 2;
  optional bool stable_prod_grad = 3 [default = true];
}
message ELUParameter {
  optional float alpha = 1 [default = 1];
}
message EmbedParameter {
  optional uint32 num_output = 1;
  optional uint32 input_dim = 2;
  optional bool bias_term = 3 [default = true];
  optional FillerParameter weight_filler = 4;
  optional FillerParameter bias_filler = 5;
}
message ExpParameter {
  optional float base = 1 [default = -1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message FlattenParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 end_axis = 2 [default = -1];
}
message InnerProductParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  optional FillerParameter weight_filler = 3;
  optional FillerParameter bias_filler = 4;
  optional int32 axis = 5 [default = 1];
  optional bool transpose = 6 [default = false];
}
message InputParameter {
  repeated BlobShape shape = 1;
}
message LogParameter {
  optional float base = 1 [default = -1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message LRNParameter {
  optional uint32 local_size = 1 [default = 5];
  optional float alpha = 2 [default = 1.0];
  optional float beta = 3 [default = 0.75];
  enum NormRegion { ACROSS_CHANNELS = 0; WITHIN_CHANNEL = 1; }
  optional NormRegion norm_region = 4 [default = ACROSS_CHANNELS];
  optional float k = 5 [default = 1.0];
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 6 [default = DEFAULT];
}
message PoolingParameter {
  enum PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
  optional PoolMethod pool = 1 [default = MAX];
  optional uint32 pad = 4 [default = 0];
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_size = 2;
  optional uint32 kernel_h = 5;
  optional uint32 kernel_w = 6;
  optional uint32 stride = 3 [default = 1];
  optional uint32 stride_h = 7;
  optional uint32 stride_w = 8;
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 11 [default = DEFAULT];
  optional bool global_pooling = 12 [default = false];
  enum RoundMode { CEIL = 0; FLOOR = 1; }
  optional RoundMode round_mode = 13 [default = CEIL];
  // Forks before round_mode (BVLC PR 3057 and descendants): field 13 there, see above.
  optional bool ceil_mode = 1013 [default = true];
}
message PowerParameter {
  optional float power = 1 [default = 1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message PReLUParameter {
  optional FillerParameter filler = 1;
  optional bool channel_shared = 2 [default = false];
}
message ReLUParameter {
  optional float negative_slope = 1 [default = 0];
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 2 [default = DEFAULT];
}
message ReshapeParameter {
  optional BlobShape shape = 1;
  optional int32 axis = 2 [default = 0];
  optional int32 num_axes = 3 [default = -1];
}
message ScaleParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 num_axes = 2 [default = 1];
  optional FillerParameter filler = 3;
  optional bool bias_term = 4 [default = false];
  optional FillerParameter bias_filler = 5;
}
message SigmoidParameter {
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 1 [default = DEFAULT];
}
message SliceParameter {
  optional int32 axis = 3 [default = 1];
  repeated uint32 slice_point = 2;
  optional uint32 slice_dim = 1 [default = 1];
}
message SoftmaxParameter {
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 1 [default = DEFAULT];
  optional int32 axis = 2 [default = 1];
}
message TanHParameter {
  enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
  optional Engine engine = 1 [default = DEFAULT];
}
message ThresholdParameter {
  optional float threshold = 1 [default = 0];
}
// Tongcheng/caffe src/caffe/proto/caffe.proto (efficient DenseNet).
message DenseBlockParameter {
  optional int32 numTransition = 1 [default = 40];
  optional int32 initChannel = 2 [default = 16];
  optional int32 growthRate = 3 [default = 12];
  optional int32 pad_h = 4 [default = 1];
  optional int32 pad_w = 5 [default = 1];
  optional int32 conv_verticalStride = 6 [default = 1];
  optional int32 conv_horizentalStride = 7 [default = 1];
  optional int32 filter_H = 8 [default = 3];
  optional int32 filter_W = 9 [default = 3];
  optional FillerParameter Filter_Filler = 10;
  optional FillerParameter BN_Scaler_Filler = 11;
  optional FillerParameter BN_Bias_Filler = 12;
  optional int32 gpuIdx = 15 [default = 0];
  optional bool use_dropout = 16 [default = false];
  optional float dropout_amount = 17 [default = 0];
  optional bool use_BC = 18 [default = false];
  optional bool BC_ultra_space_efficient = 19 [default = false];
  optional int32 workspace_MB = 20 [default = 8];
  optional float moving_average_fraction = 21 [default = 0.1];
}
message V1LayerParameter {
  repeated string bottom = 2;
  repeated string top = 3;
  optional string name = 4;
  repeated NetStateRule include = 32;
  repeated NetStateRule exclude = 33;
  enum LayerType {
    NONE = 0; ABSVAL = 35; ACCURACY = 1; ARGMAX = 30; BNLL = 2; CONCAT = 3; CONTRASTIVE_LOSS = 37;
    CONVOLUTION = 4; DATA = 5; DECONVOLUTION = 39; DROPOUT = 6; DUMMY_DATA = 32; EUCLIDEAN_LOSS = 7;
    ELTWISE = 25; EXP = 38; FLATTEN = 8; HDF5_DATA = 9; HDF5_OUTPUT = 10; HINGE_LOSS = 28; IM2COL = 11;
    IMAGE_DATA = 12; INFOGAIN_LOSS = 13; INNER_PRODUCT = 14; LRN = 15; MEMORY_DATA = 29;
    MULTINOMIAL_LOGISTIC_LOSS = 16; MVN = 34; POOLING = 17; POWER = 26; RELU = 18; SIGMOID = 19;
    SIGMOID_CROSS_ENTROPY_LOSS = 27; SILENCE = 36; SOFTMAX = 20; SOFTMAX_LOSS = 21; SPLIT = 22;
    SLICE = 33; TANH = 23; WINDOW_DATA = 24; THRESHOLD = 31;
  }
  optional LayerType type = 5;
  repeated BlobProto blobs = 6;
  repeated string param = 1001;
  enum DimCheckMode { STRICT = 0; PERMISSIVE = 1; }
  repeated DimCheckMode blob_share_mode = 1002;
  repeated float blobs_lr = 7;
  repeated float weight_decay = 8;
  repeated float loss_weight = 35;
  optional AccuracyParameter accuracy_param = 27;
  optional ArgMaxParameter argmax_param = 23;
  optional ConcatParameter concat_param = 9;
  optional ConvolutionParameter convolution_param = 10;
  optional DropoutParameter dropout_param = 12;
  optional EltwiseParameter eltwise_param = 24;
  optional ExpParameter exp_param = 41;
  optional InnerProductParameter inner_product_param = 17;
  optional LRNParameter lrn_param = 18;
  optional PoolingParameter pooling_param = 19;
  optional PowerParameter power_param = 21;
  optional ReLUParameter relu_param = 30;
  optional SigmoidParameter sigmoid_param = 38;
  optional SoftmaxParameter softmax_param = 39;
  optional SliceParameter slice_param = 31;
  optional TanHParameter tanh_param = 37;
  optional ThresholdParameter threshold_param = 25;
  optional TransformationParameter transform_param = 36;
  optional LossParameter loss_param = 42;
  optional ContrastiveLossParameter contrastive_loss_param = 40;
  optional DataParameter data_param = 11;
  optional DummyDataParameter dummy_data_param = 26;
  optional HDF5DataParameter hdf5_data_param = 13;
  optional HDF5OutputParameter hdf5_output_param = 14;
  optional HingeLossParameter hinge_loss_param = 29;
  optional ImageDataParameter image_data_param = 15;
  optional InfogainLossParameter infogain_loss_param = 16;
  optional MemoryDataParameter memory_data_param = 22;
  optional MVNParameter mvn_param = 34;
  optional WindowDataParameter window_data_param = 20;
}
"""

# V1 LayerType enum name -> the type string of the new format (Caffe's upgrade_proto.cpp).
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V1 parameter messages that carry over to the new LayerParameter under the same field name.
V1_COPIED_PARAMS = ("accuracy_param", "argmax_param", "concat_param", "convolution_param", "dropout_param",
                    "eltwise_param", "exp_param", "inner_product_param", "lrn_param", "pooling_param",
                    "power_param", "relu_param", "sigmoid_param", "softmax_param", "slice_param", "tanh_param",
                    "threshold_param", "transform_param", "loss_param", "contrastive_loss_param", "data_param",
                    "dummy_data_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
                    "image_data_param", "infogain_loss_param", "memory_data_param", "mvn_param",
                    "window_data_param")


# -- a tiny reader of the schema text above -------------------------------------------------

_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}
_LABELS = {
    "optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    "required": descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
}
_TOKEN = re.compile(r"//[^\n]*|-?\d[\d.]*(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|[{}\[\];=,]")


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    """Translate :data:`SCHEMA` into a FileDescriptorProto (messages, nested enums, fields)."""
    toks = [t for t in _TOKEN.findall(SCHEMA) if not t.startswith("//")]
    fdp = descriptor_pb2.FileDescriptorProto(name="mapspec_caffe_subset.proto", package=PACKAGE, syntax="proto2")
    pos = 0
    enums_of: dict[str, set] = {"": set()}  # message name -> names of its nested enums

    def take(expected=None):
        nonlocal pos
        t = toks[pos]
        pos += 1
        if expected is not None and t != expected:
            raise RuntimeError(f"caffe_pb schema: expected {expected!r}, got {t!r} at token {pos}")
        return t

    def parse_enum(target):
        e = target.add(name=take())
        take("{")
        while toks[pos] != "}":
            name = take()
            take("=")
            e.value.add(name=name, number=int(take()))
            take(";")
        take("}")
        return e.name

    fields = []  # (message proto, field proto, type name) resolved after all names are known
    while pos < len(toks):
        kind = take()
        if kind == "enum":
            enums_of[""].add(parse_enum(fdp.enum_type))
            continue
        if kind != "message":
            raise RuntimeError(f"caffe_pb schema: unexpected {kind!r}")
        m = fdp.message_type.add(name=take())
        enums_of[m.name] = set()
        take("{")
        while toks[pos] != "}":
            if toks[pos] == "enum":
                take()
                enums_of[m.name].add(parse_enum(m.enum_type))
                continue
            label, type_name, name = take(), take(), take()
            take("=")
            f = m.field.add(name=name, number=int(take()), label=_LABELS[label])
            if toks[pos] == "[":
                take()
                while True:
                    opt = take()
                    take("=")
                    val = take()
                    if opt == "default":
                        f.default_value = val
                    elif opt == "packed":
                        f.options.packed = val == "true"
                    if take() == "]":
                        break
            take(";")
            fields.append((m, f, type_name))
        take("}")
    messages = {m.name for m in fdp.message_type}
    for m, f, type_name in fields:
        if type_name in _SCALARS:
            f.type = _SCALARS[type_name]
        elif type_name in enums_of[m.name]:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
            f.type_name = f".{PACKAGE}.{m.name}.{type_name}"
        elif type_name in enums_of[""]:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
            f.type_name = f".{PACKAGE}.{type_name}"
        elif type_name in messages:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            f.type_name = f".{PACKAGE}.{type_name}"
        else:
            raise RuntimeError(f"caffe_pb schema: unknown type {type_name!r} of {m.name}.{f.name}")
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build_file())


def message_class(name: str):
    """The generated message class ``caffe.<name>`` of this subset (e.g. ``"PoolingParameter"``)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = message_class("NetParameter")
LayerParameter = message_class("LayerParameter")
V1LayerParameter = message_class("V1LayerParameter")
BlobProto = message_class("BlobProto")
BlobShape = message_class("BlobShape")
NetStateRule = message_class("NetStateRule")
PHASE_TEST = 1
PHASE_TRAIN = 0


# -- text prototxts -------------------------------------------------------------------------

class UnknownField(NamedTuple):
    """A field of a prototxt that this subset does not know, skipped while parsing."""

    path: str  # e.g. "layer[3].bn_param" or "layer[3].pooling_param.pad_type"
    line: int  # 1-based
    layer: Optional[int]  # index into net.layer (or net.layers for V1), None at net level
    name: str


def _scan_unknown(text: str, root_desc) -> list[UnknownField]:
    """Walk the token stream of a text-format message and list the fields unknown to the schema.

    Uses protobuf's own text tokenizer, so strings, comments and numbers are read exactly
    as ``text_format`` reads them; syntax errors are left to ``text_format`` to report.
    """
    tok = text_format.Tokenizer(text.splitlines(keepends=True))
    found: list[UnknownField] = []
    # stack of (descriptor or None if unknown, path, layer index, closing token)
    stack = [(root_desc, "", None, None)]
    counts: list[dict] = [{}]
    try:
        while not tok.AtEnd():
            desc, path, layer, closing = stack[-1]
            if closing is not None and tok.token == closing:
                tok.NextToken()
                stack.pop()
                counts.pop()
                tok.TryConsume(",") or tok.TryConsume(";")
                continue
            line = getattr(tok, "_line", -1) + 1  # the tokenizer's 0-based line of the current token
            name = tok.ConsumeIdentifierOrNumber()
            field = desc.fields_by_name.get(name) if desc is not None else None
            if desc is not None and field is None:
                found.append(UnknownField(f"{path}.{name}" if path else name, line, layer, name))
            if tok.TryConsume(":") and not (tok.LookingAt("{") or tok.LookingAt("<")):
                if tok.TryConsume("["):  # short repeated form [a, b]
                    while not tok.TryConsume("]"):
                        _skip_value(tok)
                        tok.TryConsume(",")
                else:
                    _skip_value(tok)
            else:
                opening = tok.token
                tok.NextToken()
                closing = "}" if opening == "{" else ">"
                sub = field.message_type if field is not None and field.message_type is not None else None
                index = counts[-1].get(name, 0)
                counts[-1][name] = index + 1
                sub_path = f"{path}.{name}" if path else name
                if field is not None and _repeated(field):
                    sub_path += f"[{index}]"
                sub_layer = layer
                if not path and name in ("layer", "layers"):
                    sub_layer = index
                stack.append((sub, sub_path, sub_layer, closing))
                counts.append({})
            tok.TryConsume(",") or tok.TryConsume(";")
    except text_format.ParseError:
        pass  # text_format reports the syntax error with its own message
    return found


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _skip_value(tok) -> None:
    """Consume one scalar value (adjacent string literals concatenate, as in text_format)."""
    if tok.token[:1] in ("'", '"'):
        while tok.token[:1] in ("'", '"'):
            tok.NextToken()
        return
    tok.NextToken()


def parse_text(text: str, path: str = "<text>") -> tuple:
    """Parse prototxt text into a ``NetParameter``; returns ``(net, unknown_fields)``.

    Unknown fields are skipped (and listed); syntax errors, wrong value types and
    unknown enum names are :class:`FormatError` with the line and column.
    """
    net = NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as e:
        raise FormatError(path, f"not a valid Caffe prototxt: {e}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # pathological nesting or numbers
        raise FormatError(path, f"not a valid Caffe prototxt: {e}") from None
    return net, _scan_unknown(text, NetParameter.DESCRIPTOR)


# -- legacy V1 layers -----------------------------------------------------------------------

def upgrade_v1_layer(v1, path: str = "<net>", index: int = 0):
    """A new-style ``LayerParameter`` from a legacy ``V1LayerParameter`` (as Caffe upgrades it).

    Copies name, type (enum -> string), bottoms, tops, include/exclude rules, blobs, loss
    weights, per-blob learning rates (``blobs_lr``/``weight_decay`` -> ``param``) and the
    layer parameters.
    """
    texts = [v1.name, *v1.bottom, *v1.top, *v1.param]
    if not all(isinstance(t, str) for t in texts):  # protobuf hands out bytes for invalid UTF-8 in proto2
        raise FormatError(path, f"legacy layer {index}: its name, blob or parameter names are not UTF-8 text")
    layer = LayerParameter()
    layer.name = v1.name
    type_name = v1.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number.get(v1.type)
    if type_name is None:
        raise FormatError(path, f"legacy layer {index} ({v1.name!r}) has the unknown V1 type code {v1.type}")
    layer.type = V1_TYPE_NAMES[type_name.name]
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    for blob in v1.blobs:
        layer.blobs.add().CopyFrom(blob)
    for i, name in enumerate(v1.param):
        while len(layer.param) <= i:
            layer.param.add()
        layer.param[i].name = name
    for i, lr in enumerate(v1.blobs_lr):
        while len(layer.param) <= i:
            layer.param.add()
        layer.param[i].lr_mult = lr
    for i, wd in enumerate(v1.weight_decay):
        while len(layer.param) <= i:
            layer.param.add()
        layer.param[i].decay_mult = wd
    for i, mode in enumerate(v1.blob_share_mode):
        while len(layer.param) <= i:
            layer.param.add()
        layer.param[i].share_mode = mode  # same numbers in both DimCheckMode enums
    layer.loss_weight.extend(v1.loss_weight)
    for name in V1_COPIED_PARAMS:
        if v1.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1, name))
    return layer


def upgrade_net(net, path: str = "<net>"):
    """Convert legacy V1 ``layers`` into the new ``layer`` list in place; returns ``net``.

    A net that holds both lists is an error, as in Caffe.
    """
    if len(net.layers) == 0:
        return net
    if len(net.layer) > 0:
        raise FormatError(path, "the net has both 'layer' (new) and 'layers' (legacy V1) lists; Caffe refuses "
                          "such files: keep one")
    new = [upgrade_v1_layer(v1, path, i) for i, v1 in enumerate(net.layers)]
    net.ClearField("layers")
    for layer in new:
        net.layer.add().CopyFrom(layer)
    return net


# -- unknown fields of binary messages -------------------------------------------------------

def _unknown_numbers(msg) -> list:
    """Field numbers of ``msg``'s own unknown fields (protobuf keeps them when decoding)."""
    try:
        from google.protobuf import unknown_fields
    except ImportError:  # protobuf < 4.22
        fields = msg.UnknownFields() if hasattr(msg, "UnknownFields") else ()
    else:
        fields = unknown_fields.UnknownFieldSet(msg)
    return sorted({f.field_number for f in fields})


def unknown_field_paths(msg, prefix: str = "") -> list:
    """Paths of the fields in a decoded binary message that this schema does not know.

    A binary file carries numbers, not names, so an unknown field is shown as ``#N``
    (``"#198"`` for an unknown layer parameter, ``"pooling_param.#20"`` for an unknown
    field inside a known one): what a fork added.  Blobs are not searched (their data
    is never parsed here).
    """
    out = [f"{prefix}#{n}" for n in _unknown_numbers(msg)]
    for field, value in msg.ListFields():
        if field.message_type is None or field.name == "blobs":
            continue
        if _repeated(field):
            for i, item in enumerate(value):
                out.extend(unknown_field_paths(item, f"{prefix}{field.name}[{i}]."))
        else:
            out.extend(unknown_field_paths(value, f"{prefix}{field.name}."))
    return out

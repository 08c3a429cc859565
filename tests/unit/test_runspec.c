/*
 * runspec: canonical bytes (RFC 8785 / JCS), run id, strict parsing with
 * errors that name the key, comparison.
 *
 * Independent references: the golden document and the number table below
 * were produced by Node.js's JSON.stringify (ECMAScript Number::toString)
 * over an object with sorted keys, not by this code:
 *   node -e 'console.log(JSON.stringify(x))'  (see the comment at each table)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "fileio.h"
#include "runspec.h"

/*
 * JSON.stringify of the spec built by test_spec(), with keys sorted, from
 * Node 20:
 *   const spec = {format: 1, base_model: "0001..1f", admission: {policy: "open"},
 *     arch: {n_layer: 2, n_head: 2, n_embd: 64, n_positions: 128, vocab_size: 50257,
 *            layer_norm_epsilon: Math.fround(1e-5), tie_word_embeddings: true},
 *     train: {directions: 2, eps: 0.001, lr: 3e-4, max_scale: 0.0123,
 *             perturbation: "gaussian", quantization: "int8", scale_window: 16,
 *             schedule: "cosine", total_steps: 300, trainable: "attn|mlp",
 *             warmup_steps: 30, weight_decay: 0.1}};
 */
static const char golden[] =
    "{\"admission\":{\"policy\":\"open\"},\"arch\":{\"layer_norm_epsilon\":0.000009999999747378752,"
    "\"n_embd\":64,\"n_head\":2,\"n_layer\":2,\"n_positions\":128,\"tie_word_embeddings\":true,"
    "\"vocab_size\":50257},\"base_model\":"
    "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\",\"format\":1,"
    "\"train\":{\"directions\":2,\"eps\":0.001,\"lr\":0.0003,\"max_scale\":0.0123,"
    "\"perturbation\":\"gaussian\",\"quantization\":\"int8\",\"scale_window\":16,"
    "\"schedule\":\"cosine\",\"total_steps\":300,\"trainable\":\"attn|mlp\","
    "\"warmup_steps\":30,\"weight_decay\":0.1}}";

static void test_spec(sw_runspec *rs)
{
    sw_runspec_defaults(rs);
    for (int i = 0; i < 32; i++)
        rs->base_digest[i] = (uint8_t)i;
    rs->arch.n_layer = 2;
    rs->arch.n_head = 2;
    rs->arch.n_embd = 64;
    rs->arch.n_positions = 128;
    rs->arch.vocab_size = 50257;
    rs->arch.layer_norm_epsilon = 1e-5f;
    rs->arch.tie_word_embeddings = true;
    rs->directions = 2;
    rs->eps = 0.001;
    rs->lr = 3e-4;
    rs->max_scale = 0.0123;
    rs->perturb = SW_PERTURB_GAUSSIAN;
    rs->scale_window = 16;
    rs->schedule = SW_SCHEDULE_COSINE;
    rs->total_steps = 300;
    snprintf(rs->trainable, sizeof rs->trainable, "attn|mlp");
    rs->warmup_steps = 30;
    rs->weight_decay = 0.1;
}

/* Doubles (bit patterns) and their JSON.stringify form, from Node 20 (edge
 * cases, random bit patterns, random short decimals, powers of two). */
static const struct {
    uint64_t bits;
    const char *text;
} number_cases[] = {
    {0x0000000000000000ull, "0"},
    {0x3ff0000000000000ull, "1"},
    {0xbff0000000000000ull, "-1"},
    {0x3fb999999999999aull, "0.1"},
    {0x3fc999999999999aull, "0.2"},
    {0x3fd3333333333334ull, "0.30000000000000004"},
    {0x3e7ad7f29abcaf48ull, "1e-7"},
    {0x3eb0c6f7a0b5ed8dull, "0.000001"},
    {0x3e8421f5f40d8376ull, "1.5e-7"},
    {0x3eb0c6f784902b25ull, "9.999999e-7"},
    {0x444b1ae4d6e2ef50ull, "1e+21"},
    {0x4415af1d78b58c40ull, "100000000000000000000"},
    {0x441ac53a7e04bcdaull, "123456789012345680000"},
    {0x4450bb448ec2f608ull, "1.2345678901234568e+21"},
    {0x0000000000000001ull, "5e-324"},
    {0x0010000000000000ull, "2.2250738585072014e-308"},
    {0x7fefffffffffffffull, "1.7976931348623157e+308"},
    {0x4340000000000000ull, "9007199254740992"},
    {0x4340000000000000ull, "9007199254740992"},
    {0x0000000000000003ull, "1.5e-323"},
    {0x44b52d02c7e14af6ull, "1e+23"},
    {0x447c7e83209e90b2ull, "8.41e+21"},
    {0x3ea0c6f7a0b5ed8dull, "5e-7"},
    {0x3eb0c6f7a0b5ed8dull, "0.000001"},
    {0x3ee4f8b588e368f1ull, "0.00001"},
    {0x4059000000000000ull, "100"},
    {0x3f1a36e2eb1c432dull, "0.0001"},
    {0x3f33a92a30553261ull, "0.0003"},
    {0x3f50624dd2f1a9fcull, "0.001"},
    {0x3ee4f8b580000000ull, "0.000009999999747378752"},
    {0x3fb99999a0000000ull, "0.10000000149011612"},
    {0x3eb0000000000000ull, "9.5367431640625e-7"},
    {0x43e0000000000000ull, "9223372036854776000"},
    {0x43f0000000000000ull, "18446744073709552000"},
    {0x4011666666666666ull, "4.35"},
    {0x3fe0000000000000ull, "0.5"},
    {0x3fd5555555555555ull, "0.3333333333333333"},
    {0x3fe5555555555555ull, "0.6666666666666666"},
    {0xbf1a36e2eb1c432dull, "-0.0001"},
    {0xbe7ad7f29abcaf48ull, "-1e-7"},
    {0x405edd2f1a9fbe77ull, "123.456"},
    {0x7e37e43c8800759cull, "1e+300"},
    {0x01a56e1fc2f8f359ull, "1e-300"},
    {0x0010000000000000ull, "2.2250738585072014e-308"},
    {0x0008000000000000ull, "1.1125369292536007e-308"},
    {0x1c0d57f10c894254ull, "1.4830122828920016e-173"},
    {0x43f04a6ece53d613ull, "18781959765316678000"},
    {0xe2b8410510668fa6ull, "-3.575532127436644e+167"},
    {0xd5f2e30a9e501b7dull, "-1.0829258728928171e+106"},
    {0x535c8ea8a4e05948ull, "3.7230187291668613e+93"},
    {0x8f7b1bac9609eaf7ull, "-4.262874002980358e-234"},
    {0xcb3af636587957baull, "-2.5824242072052563e+54"},
    {0x6438f14dfe833301ull, "6.169062368256605e+174"},
    {0xd0af9825c659f77cull, "-4.682717518917287e+80"},
    {0x302bd02b522a861bull, "1.2009957333271821e-76"},
    {0xfd70522e931f790eull, "-1.6677967842578716e+296"},
    {0xfba9a1630e23bac5ull, "-4.878446657335358e+287"},
    {0x29616ccb5e0010f0ull, "2.318589285015657e-109"},
    {0xd37bf421a1818b7full, "-1.4577297053362402e+94"},
    {0x7a5b1baa844c07a2ull, "2.4603368763737895e+281"},
    {0x552e421879d836c9ull, "2.1178316544328792e+102"},
    {0xa92e8eaf3493d9a4ull, "-2.5412503051231247e-110"},
    {0x5fe48bdeead11f23ull, "8.60880578948587e+153"},
    {0x618d3e487ffb5776ull, "8.222691106237041e+161"},
    {0x5cd158ba16a76b0dull, "1.29107691235244e+139"},
    {0x07727df42b81c598ull, "8.54570675525937e-273"},
    {0x16e635e91fb5a507ull, "2.3213088696070116e-198"},
    {0x38c4ac26c846fc8aull, "3.1104470921459883e-35"},
    {0x8ade8c37577c5b91ull, "-2.5430944865444634e-256"},
    {0xa7e5b8ad611588ccull, "-1.722738704669676e-116"},
    {0x83785723e5c9c12bull, "-6.097780315332402e-292"},
    {0xdab33022a4b9cadeull, "-8.312822724526027e+128"},
    {0x41b96ab112ea4c55ull, "426422546.91522723"},
    {0x4b0e14fa2fee1740ull, "3.601597095685222e+53"},
    {0x7402f3fb0a0a578full, "6.784931974924426e+250"},
    {0xf33082c146e3d672ull, "-7.215120195549942e+246"},
    {0x087799f31d30c159ull, "7.14794175889519e-268"},
    {0x0c996e223db1a4f4ull, "5.6829459783155954e-248"},
    {0xe7860860627a8c33ull, "-4.908348627938077e+190"},
    {0xc360b934d02e7346ull, "-37657888876108340"},
    {0x48a12d9e7a7f7e9dull, "7.482161107104073e+41"},
    {0x7c5b2a840d01a5e8ull, "1.0589678202639377e+291"},
    {0x36aed0278207c317ull, "2.698647105952319e-45"},
    {0x2f32df6d0cf0355aull, "2.487004346447123e-81"},
    {0x11aadb8d2d7a8821ull, "1.4511783911351778e-223"},
    {0xd75f5767c6aece1cull, "-7.537323673202209e+112"},
    {0x4a8fc827e2ada03bull, "1.4863756283822065e+51"},
    {0x2a0254f4b8c0f0aeull, "2.497802242622384e-106"},
    {0x0e3ac880e5fe21e5ull, "4.0166704951275935e-240"},
    {0xcc8f347b2e2d1190ull, "-6.2680636295350096e+60"},
    {0x52db68d069da079full, "1.3958498820165765e+91"},
    {0xda3685c1600db942ull, "-3.811487003186698e+126"},
    {0x02e560ba1422cfe9ull, "1.0460153613400835e-294"},
    {0x849d7a22f547a444ull, "-1.9358371998957856e-286"},
    {0xba2202bd6b111d43ull, "-1.1366351447045025e-28"},
    {0xeb7d555532ece316ull, "-6.027238632455651e+209"},
    {0xc22299e52381562dull, "-39945671104.66831"},
    {0x37774f28e314fa38ull, "1.6723543490008127e-41"},
    {0x8f5f6fac8cd14527ull, "-1.2358728798842298e-234"},
    {0x597820df5d32022aull, "9.968892688048793e+122"},
    {0x0342921fe2b6b8b1ull, "5.815469976147267e-293"},
    {0x7b3c5add822ac76cull, "4.21642788634725e+285"},
    {0x350acc1833b7234bull, "3.4972035583573107e-53"},
    {0x532b85a8b7c1ea7eull, "4.485081553067219e+92"},
    {0xce2f82f15b283b75ull, "-4.2477411636603242e+68"},
    {0x28a233c74a11ffe0ull, "5.913123370859785e-113"},
    {0x201f621657e19bafull, "5.85165628779005e-154"},
    {0xe9b5194fe726b012ull, "-1.615014514429681e+201"},
    {0xdbdab32a9d076279ull, "-3.0322654230317206e+134"},
    {0x8b3557b077fad794ull, "-1.137128930106147e-254"},
    {0xb29fb30ce895d253ull, "-7.525098736431211e-65"},
    {0x828b4a613b63a6e6ull, "-2.0864429132840474e-296"},
    {0x92fe80074395f1bdull, "-3.456086128287877e-217"},
    {0x192113900ab0c288ull, "1.2264488850957287e-187"},
    {0xb510e5a822232b37ull, "-4.410348039710868e-53"},
    {0xf8b096f3e50962faull, "-2.243641892571957e+273"},
    {0x1ffcc8c8b5a9ed41ull, "1.3417700686150025e-154"},
    {0xdc622fa995ce74bcull, "-1.0574736719306435e+137"},
    {0x49242e7d7a074a5bull, "2.250323833115041e+44"},
    {0x66a5e5675389b84eull, "2.9772428268251304e+186"},
    {0xb17b50af66719905ull, "-2.4735747140749734e-70"},
    {0xe69fb192e031e230ull, "-2.1547136336756245e+186"},
    {0xd1c55e28055213bfull, "-8.302111359536645e+85"},
    {0x9dfade60d0cbbae2ull, "-2.9161406126280175e-164"},
    {0x2d37dde19a777909ull, "7.322748579844029e-91"},
    {0x464aa1d581b03ee4ull, "4.2200348511762445e+30"},
    {0x174205b17d49ab63ull, "1.205484407881185e-196"},
    {0x6c93d002adffbeb6ull, "1.0671785741280018e+215"},
    {0x9ab990bf74e6514dull, "-6.161061688309075e-180"},
    {0xaeed00ddf409fed8ull, "-1.1943728281977692e-82"},
    {0x1bbe6c05464e7547ull, "4.8047374242587294e-175"},
    {0x830f964395b357caull, "-6.1821878301584555e-294"},
    {0xd632c298510d25d1ull, "-1.7210538992596628e+107"},
    {0xfaae2e18cb1ed60cull, "-8.765286751978548e+282"},
    {0xb07853391cff156bull, "-3.3612092694095636e-75"},
    {0xf76acc8dd7255a1eull, "-1.7282453501858931e+267"},
    {0xf6a68cedac233a95ull, "-3.550442059653537e+263"},
    {0x3bd21fc20861b880ull, "1.5351671260934577e-20"},
    {0xe9a9a4e94d9c6fcfull, "-9.814677307716685e+200"},
    {0xd60bc6a3bed9d9b2ull, "-3.1852035453680368e+106"},
    {0x06b44fac234c1399ull, "2.2916062981826227e-276"},
    {0xb15f4941bd8cda34ull, "-7.08293547144917e-71"},
    {0x2ad607fc99ada873ull, "2.459119303854843e-102"},
    {0xc9b76b6f506e2a86ull, "-1.3370266429795474e+47"},
    {0xc3854d4349db74ddull, "-191869629062093730"},
    {0x9ec2c43c7295af28ull, "-1.668540293426966e-160"},
    {0xbfb9021e2fe42357ull, "-0.09768856686799886"},
    {0xb4b19120f5ace09aull, "-7.164339432887305e-55"},
    {0x2589eb895bd96261ull, "7.478731342200341e-128"},
    {0xc6ffc4fd02e0eb5cull, "-1.0309787532055772e+34"},
    {0xafcb225a5a3f847bull, "-1.8307456918140365e-78"},
    {0x2c814011f6e1cfeeull, "2.5843264139168927e-94"},
    {0xdf74c82010c62025ull, "-6.802675017834855e+151"},
    {0xf7a510d0e5b682d0ull, "-2.1736108420844882e+268"},
    {0x86bc32ccc671afdfull, "-3.1814787562058048e-276"},
    {0x0792b684d06e0c82ull, "3.4591270419841216e-272"},
    {0x06ef8adc129e3229ull, "2.8470100082973434e-275"},
    {0x4e38c39715f5a984ull, "6.676367699717682e+68"},
    {0xb30123758c82c983ull, "-5.207676978823573e-63"},
    {0xca72ebd6b99bea56ull, "-4.4245489330240785e+50"},
    {0xa144f0c0dd1e5c6dull, "-2.0470950522490042e-148"},
    {0x8764545d0d08d378ull, "-4.697443842152819e-273"},
    {0x3d9d3a5457b53567ull, "6.645643558403267e-12"},
    {0x5510fb42f0b2fd6aull, "5.942844271559742e+101"},
    {0x199caab70947a2f1ull, "2.635376904535398e-185"},
    {0x43d1ec391f5c12e0ull, "5165880000000000000"},
    {0x3af3e4afefb20f46ull, "1.02846e-24"},
    {0x4061820c49ba5e35ull, "140.064"},
    {0x45ed5e43e889ebb8ull, "7.271219999999999e+28"},
    {0x4154d0f200000000ull, "5456840"},
    {0x46c08ebb8f92647aull, "6.71654e+32"},
    {0x406be7ae147ae148ull, "223.24"},
    {0x43662e16cfe9d200ull, "49945000000000000"},
    {0x3c3f0f854b8984b0ull, "1.6838000000000002e-18"},
    {0x3cc95193be75e585ull, "7.027340000000001e-16"},
    {0x3c3de3beaf1d1ce1ull, "1.6203200000000002e-18"},
    {0x4514a39aeced648cull, "6.23778e+24"},
    {0x45729d096ab2c9e0ull, "3.60036e+26"},
    {0x46a097204aaddf9eull, "1.68246e+32"},
    {0x3c4ca1adf171a3d6ull, "3.1042400000000005e-18"},
    {0x46a662bd7099e36dull, "2.27018e+32"},
    {0x410543c000000000ull, "174200"},
    {0x41b2a1fd30000000ull, "312606000"},
    {0x4621bd38b858e6c0ull, "7.0272e+29"},
    {0x43526339ebbb5400ull, "20702600000000000"},
    {0x3e0084c6456f33d6ull, "4.807560000000001e-10"},
    {0x41c0ee07b8000000ull, "568070000"},
    {0x3fa70809b9bd2590ull, "0.0449832"},
    {0x3f19dc4a1852065eull, "0.00009865000000000001"},
    {0x3b714b6a492ffc10ull, "2.2889200000000003e-22"},
    {0x46b9777985145e62ull, "5.16526e+32"},
    {0x3c4f725005f15114ull, "3.4094400000000002e-18"},
    {0x3cd1529b437f8e68ull, "9.616020000000001e-16"},
    {0x420da2dc54000000ull, "15910800000"},
    {0x3bec04a5c64f2f86ull, "4.74646e-20"},
    {0x3c62f80e82730b0dull, "8.22648e-18"},
    {0x4331e2f128961000ull, "5034600000000000"},
    {0x4159902e00000000ull, "6701240"},
    {0x45f29d8ae82e0876ull, "9.2179e+28"},
    {0x3fb1ceffacf3e971ull, "0.0695648"},
    {0x45e155d83c059ea8ull, "4.29202e+28"},
    {0x45870f1ade8c4ac1ull, "8.92052e+26"},
    {0x3d831d90fa49f0f5ull, "2.17318e-12"},
    {0x3eb60b964765d659ull, "0.0000013139999999999998"},
    {0x3bf5a5abade8c775ull, "7.334340000000001e-20"},
    {0x42e5c1314cfb0000ull, "191356000000000"},
    {0x45cd2668eef432b7ull, "1.8042999999999998e+28"},
    {0x3dfb8d7b3fbe3affull, "4.0094400000000005e-10"},
    {0x46c2fd1cc393ab7dull, "7.702740000000001e+32"},
    {0x42297f604d000000ull, "54755600000"},
    {0x3d98dd748c6629c6ull, "5.653659999999999e-12"},
    {0x4562168471fe549full, "1.74936e+26"},
    {0x3e7113498274f1beull, "6.36106e-8"},
    {0x421422b47e000000ull, "21620400000"},
    {0x46c78d8f7d9a7324ull, "9.55422e+32"},
    {0x46570def0508c194ull, "7.306240000000001e+30"},
    {0x46c4fcf357c6ef18ull, "8.51378e+32"},
    {0x4494dd4ce1afce50ull, "2.46324e+22"},
    {0x3ee288dd788566a1ull, "0.000008838"},
    {0x45869543ba635a28ull, "8.7364e+26"},
    {0x4517267824440adfull, "6.99674e+24"},
    {0x46e5d44a683535dbull, "3.542e+33"},
    {0x3f35794192faf78bull, "0.000327662"},
    {0x415cd06800000000ull, "7553440"},
    {0x3af7ce544cbac53dull, "1.23074e-24"},
    {0x3edd6a52bdeac238ull, "0.00000701316"},
    {0x443ec75608d8c86full, "567766000000000000000"},
    {0x3c1dd6e667e312f2ull, "4.0440000000000004e-19"},
    {0x3be2a8600ffb4eb7ull, "3.16074e-20"},
    {0x45888e1f673ed28aull, "9.49932e+26"},
    {0x3f18b20ec1a00429ull, "0.00009420600000000001"},
    {0x470749439b4f0d31ull, "1.5113600000000002e+34"},
    {0x46b00702be71efa5ull, "3.25074e+32"},
    {0x46de7984d09e7884ull, "2.4724e+33"},
    {0x443ec401621e4e57ull, "567526000000000000000"},
    {0x447cab44a1085955ull, "8.4616e+21"},
    {0x40ef6d8666666667ull, "64364.200000000004"},
    {0x44b01740afc4addcull, "7.59868e+22"},
    {0x4372e522de2e0b00ull, "85095800000000000"},
    {0x43cb256465703f00ull, "3912160000000000000"},
    {0x3b17fe30248cf96bull, "4.96162e-24"},
    {0x40786b126e978d50ull, "390.692"},
    {0x41c9164978000000ull, "841782000"},
    {0x43cd7669407a2780ull, "4246000000000000000"},
    {0x4421e58078e2bd42ull, "165066000000000000000"},
    {0x4030000000000000ull, "16"},
    {0x6420000000000000ull, "1.9786432117848363e+174"},
    {0x1750000000000000ull, "2.1404388173910186e-196"},
    {0x2fc0000000000000ull, "1.0795210693868056e-78"},
    {0x0870000000000000ull, "4.845781754539109e-268"},
    {0x1460000000000000ull, "1.520873253036128e-210"},
    {0x1f90000000000000ull, "1.1653657392500323e-156"},
    {0x7900000000000000ull, "6.924462078501392e+274"},
    {0x44b0000000000000ull, "7.555786372591432e+22"},
    {0x15a0000000000000ull, "1.5947511921756108e-204"},
    {0x3fd0000000000000ull, "0.25"},
    {0x0c40000000000000ull, "1.1173611982879273e-249"},
    {0x79f0000000000000ull, "2.269007733883336e+279"},
    {0x22e0000000000000ull, "1.0496681418073576e-140"},
    {0x2c10000000000000ull, "1.8726705418768793e-96"},
    {0x5c80000000000000ull, "3.7214142683935073e+137"},
    {0x1b30000000000000ull, "9.871031767461413e-178"},
    {0x5220000000000000ull, "3.978585891278293e+87"},
    {0x0950000000000000ull, "7.939328826636877e-264"},
    {0x2ac0000000000000ull, "8.929588994392773e-103"},
    {0x4e70000000000000ull, "6.901746346790564e+69"},
    {0x3160000000000000ull, "7.24454326306137e-71"},
    {0x3b90000000000000ull, "8.470329472543003e-22"},
    {0x4a00000000000000ull, "2.923003274661806e+48"},
    {0x38b0000000000000ull, "1.2037062152420224e-35"},
    {0x05a0000000000000ull, "1.3772540099066388e-281"},
    {0x21d0000000000000ull, "8.008332380732404e-146"},
    {0x1b40000000000000ull, "1.9742063534922827e-177"},
    {0x7df0000000000000ull, "4.185580496821357e+298"},
    {0x68e0000000000000ull, "1.495020541582441e+197"},
    {0x6110000000000000ull, "3.514776401986872e+159"},
    {0x0180000000000000ull, "1.8665272370064378e-301"},
    {0x4630000000000000ull, "1.2676506002282294e+30"},
    {0x5920000000000000ull, "2.065799902469527e+121"},
    {0x0e50000000000000ull, "9.598059608932038e-240"},
    {0x3fc0000000000000ull, "0.125"},
    {0x2d70000000000000ull, "7.854549544476363e-90"},
    {0x2a60000000000000ull, "1.3952482803738708e-104"},
    {0x2890000000000000ull, "2.598852441411225e-113"},
    {0x0500000000000000ull, "1.344974619049452e-284"},
};

static void test_number_matches_ecmascript(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof number_cases / sizeof number_cases[0]; i++) {
        double x;
        memcpy(&x, &number_cases[i].bits, 8);
        char buf[32];
        int n = sw_runspec_number(x, buf, sizeof buf);
        if (n < 0 || strcmp(buf, number_cases[i].text) != 0)
            fail_msg("case %zu (%016llx): got '%s', JSON.stringify gives '%s'", i,
                     (unsigned long long)number_cases[i].bits, n < 0 ? "(error)" : buf,
                     number_cases[i].text);
        assert_int_equal(n, (int)strlen(number_cases[i].text));
    }
}

static uint64_t test_rng(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t x = *s;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    return x ^ (x >> 33);
}

/* Every finite double reads back exactly, with at most 17 significant digits. */
static void test_number_roundtrips(void **state)
{
    (void)state;
    uint64_t s = 42;
    for (int i = 0; i < 30000; i++) {
        uint64_t bits = test_rng(&s);
        double x;
        memcpy(&x, &bits, 8);
        char buf[32];
        int n = sw_runspec_number(x, buf, sizeof buf);
        if (!isfinite(x)) {
            assert_int_equal(n, SW_EINVAL);
            continue;
        }
        assert_true(n > 0);
        double back = strtod(buf, NULL);
        if (!(back == x)) fail_msg("%016llx -> '%s' -> %.17g", (unsigned long long)bits, buf, back);
        int digits = 0;
        for (const char *c = buf; *c && *c != 'e'; c++)
            digits += *c >= '0' && *c <= '9';
        assert_true(digits <= 17 + 6); /* leading zeros of "0.00000ddd" count here */
    }
    char small[3];
    assert_int_equal(sw_runspec_number(0.1, small, sizeof small), SW_ETOOBIG);
}

static void test_canonical_golden_and_run_id(void **state)
{
    (void)state;
    sw_runspec rs;
    test_spec(&rs);
    char buf[SW_RUNSPEC_MAX_BYTES];
    size_t len;
    sw_diag d = {{0}};
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
    assert_int_equal(len, strlen(golden));
    assert_memory_equal(buf, golden, len);

    uint8_t want[32], got[32];
    assert_true(sodium_init() >= 0);
    crypto_generichash(want, 32, (const unsigned char *)golden, strlen(golden), NULL, 0);
    assert_int_equal(sw_runspec_id(&rs, got, &d), 0);
    assert_memory_equal(got, want, 32);

    /* Python's hashlib.blake2b(golden, digest_size=32) and `b2sum -l 256`. */
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, got, 32);
    assert_string_equal(hex, "255bb2f0108b4c405132be74e023601620938d6327aab47f70af2d70c4e6af6c");

    sw_train_spec ts;
    assert_int_equal(sw_runspec_train_spec(&rs, &ts, &d), 0);
    assert_memory_equal(ts.run_id, want, 32);
    assert_true(ts.lr == 3e-4 && ts.max_scale == 0.0123 && ts.directions == 2);
    assert_int_equal(ts.schedule, SW_SCHEDULE_COSINE);
    assert_int_equal(ts.perturb, SW_PERTURB_GAUSSIAN);
    assert_true(ts.total_steps == 300 && ts.warmup_steps == 30);

    /* Any change of a value changes the id. */
    rs.lr = 3.0000000000000003e-4;
    assert_int_equal(sw_runspec_id(&rs, got, &d), 0);
    assert_memory_not_equal(got, want, 32);
}

/* The same values in another layout parse to the same spec and id. */
static void test_parse_any_layout(void **state)
{
    (void)state;
    static const char pretty[] =
        "{\n  \"train\": {\"weight_decay\": 1e-1, \"warmup_steps\": 30, \"trainable\": "
        "\"attn|mlp\",\n \"total_steps\": 300, \"schedule\": \"cosine\", \"scale_window\": 16,"
        " \"quantization\": \"int8\", \"perturbation\": \"gaussian\", \"max_scale\": 1.23e-2,"
        " \"lr\": 0.00030, \"eps\": 1E-3, \"directions\": 2},\n"
        "  \"format\": 1,\n  \"base_model\": "
        "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\",\n"
        "  \"arch\": {\"vocab_size\": 50257, \"tie_word_embeddings\": true, \"n_positions\": 128,"
        " \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 64, \"layer_norm_epsilon\": "
        "9.99999974737875163555145263671875e-6},\n"
        "  \"admission\": {\"policy\": \"open\"}\n}\n";
    sw_runspec a, b;
    sw_diag d = {{0}};
    test_spec(&a);
    int rc = sw_runspec_parse(pretty, strlen(pretty), "pretty.json", &b, &d);
    if (rc != 0) fail_msg("%s", d.msg);
    assert_null(sw_runspec_diff(&a, &b));
    uint8_t ia[32], ib[32];
    assert_int_equal(sw_runspec_id(&a, ia, &d), 0);
    assert_int_equal(sw_runspec_id(&b, ib, &d), 0);
    assert_memory_equal(ia, ib, 32);

    /* And the golden bytes themselves. */
    assert_int_equal(sw_runspec_parse(golden, strlen(golden), "golden", &b, &d), 0);
    assert_null(sw_runspec_diff(&a, &b));
}

/* Replaces the first occurrence of from in golden by to. */
static char *test_mutate(const char *from, const char *to)
{
    const char *at = strstr(golden, from);
    assert_non_null(at);
    size_t n = strlen(golden) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    size_t pre = (size_t)(at - golden);
    memcpy(out, golden, pre);
    strcpy(out + pre, to);
    strcat(out, at + strlen(from));
    return out;
}

static void test_parse_errors_name_the_key(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to, *want;
    } cases[] = {
        {"\"lr\":0.0003", "\"lr\":-1", "train.lr"},
        {"\"lr\":0.0003", "\"lr\":\"0.0003\"", "train.lr"},
        {"\"eps\":0.001,", "", "train.eps: missing"},
        {"\"format\":1", "\"format\":1,\"extra\":2", "extra: unknown key"},
        {"\"directions\":2", "\"directions\":2,\"seed\":1", "train.seed: unknown key"},
        {"\"n_embd\":64", "\"n_embd\":\"64\"", "arch.n_embd"},
        {"\"n_head\":2", "\"n_head\":3", "n_head"},
        {"\"vocab_size\":50257", "\"vocab_size\":-5", "arch.vocab_size"},
        {"\"base_model\":\"00", "\"base_model\":\"0A", "base_model"},
        {"\"layer_norm_epsilon\":0.000009999999747378752", "\"layer_norm_epsilon\":0.00001",
         "arch.layer_norm_epsilon"},
        {"\"tie_word_embeddings\":true", "\"tie_word_embeddings\":1", "arch.tie_word_embeddings"},
        {"\"schedule\":\"cosine\"", "\"schedule\":\"exp\"", "train.schedule"},
        {"\"perturbation\":\"gaussian\"", "\"perturbation\":\"uniform\"", "train.perturbation"},
        {"\"quantization\":\"int8\"", "\"quantization\":\"int4\"", "train.quantization"},
        {"\"policy\":\"open\"", "\"policy\":\"allowlist\"", "admission.policy"},
        {"\"format\":1", "\"format\":2", "format"},
        {"\"trainable\":\"attn|mlp\"", "\"trainable\":\"(\"", "train.trainable"},
        {"\"trainable\":\"attn|mlp\"", "\"trainable\":\"nothing-matches\"", "train.trainable"},
        {"\"total_steps\":300", "\"total_steps\":0", "train.total_steps"},
        {"\"warmup_steps\":30", "\"warmup_steps\":301", "train.warmup_steps"},
        {"\"weight_decay\":0.1", "\"weight_decay\":1", "train.weight_decay"},
        {"\"max_scale\":0.0123", "\"max_scale\":0", "train.max_scale"},
        {"\"directions\":2", "\"directions\":65", "train.directions"},
        {"\"scale_window\":16", "\"scale_window\":0", "train.scale_window"},
        {"\"scale_window\":16", "\"scale_window\":18446744073709551616", "spec.json"},
        {"\"lr\":0.0003", "\"lr\":0.0003,\"lr\":0.0003", "duplicate"},
        {"\"arch\":{", "\"arch\":[{", "spec.json"},
        {"\"train\":{\"directions\":2,\"eps\":0.001,\"lr\":0.0003,\"max_scale\":0.0123,"
         "\"perturbation\":\"gaussian\",\"quantization\":\"int8\",\"scale_window\":16,"
         "\"schedule\":\"cosine\",\"total_steps\":300,\"trainable\":\"attn|mlp\","
         "\"warmup_steps\":30,\"weight_decay\":0.1}",
         "\"train\":7", "train: expected an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *doc = test_mutate(cases[i].from, cases[i].to);
        sw_runspec rs;
        sw_diag d = {{0}};
        int rc = sw_runspec_parse(doc, strlen(doc), "spec.json", &rs, &d);
        if (rc == 0) fail_msg("case %zu: accepted %s", i, doc);
        if (strstr(d.msg, cases[i].want) == NULL || strncmp(d.msg, "spec.json", 9) != 0)
            fail_msg("case %zu: diag '%s' does not name '%s'", i, d.msg, cases[i].want);
        free(doc);
    }
    sw_runspec rs;
    sw_diag d = {{0}};
    assert_int_equal(sw_runspec_parse("[]", 2, "x.json", &rs, &d), SW_EFORMAT);
    assert_int_equal(sw_runspec_parse("{", 1, "x.json", &rs, &d), SW_EFORMAT);
    char big[SW_RUNSPEC_MAX_BYTES + 2];
    memset(big, ' ', sizeof big);
    assert_int_equal(sw_runspec_parse(big, sizeof big, "x.json", &rs, &d), SW_ETOOBIG);
}


/* A run with adapters: the lora keys are in its canonical form (and so in its
 * id), parse back, and are checked; a run without them cannot carry them. */
static void test_adapter_keys(void **state)
{
    (void)state;
    sw_runspec rs, back;
    test_spec(&rs);
    snprintf(rs.trainable, sizeof rs.trainable, ".*");
    uint8_t plain_id[32], lora_id[32];
    sw_diag d = {{0}};
    assert_int_equal(sw_runspec_id(&rs, plain_id, &d), 0);
    assert_false(sw_runspec_has_adapter(&rs));
    snprintf(rs.adapter, sizeof rs.adapter, "lora");
    rs.lora_rank = 4;
    rs.lora_alpha = 8;
    snprintf(rs.lora_targets, sizeof rs.lora_targets, "mlp.c_fc");
    char buf[SW_RUNSPEC_MAX_BYTES];
    size_t len;
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
    assert_non_null(strstr(buf, "\"train\":{\"adapter\":\"lora\",\"directions\":2,\"eps\":0.001,"
                                "\"lora_alpha\":8,\"lora_rank\":4,\"lora_targets\":\"mlp.c_fc\","));
    assert_int_equal(sw_runspec_id(&rs, lora_id, &d), 0);
    assert_memory_not_equal(plain_id, lora_id, 32);
    assert_int_equal(sw_runspec_parse(buf, len, "lora.json", &back, &d), 0);
    assert_null(sw_runspec_diff(&rs, &back));
    sw_gpt2_config m;
    sw_runspec_model_config(&back, &m);
    assert_int_equal(m.lora_rank, 4);
    assert_true(m.lora_alpha == 8.0f);
    assert_int_equal(m.lora_targets, SW_LORA_C_FC);
    /* the diff names the adapter first, then its keys */
    sw_runspec other = rs;
    snprintf(other.adapter, sizeof other.adapter, "none");
    assert_string_equal(sw_runspec_diff(&rs, &other), "train.adapter");
    other = rs;
    other.lora_rank = 5;
    assert_string_equal(sw_runspec_diff(&rs, &other), "train.lora_rank");
    /* without adapters on either side the lora keys do not matter */
    sw_runspec p1, p2;
    test_spec(&p1);
    p2 = p1;
    p2.lora_rank = 33;
    assert_null(sw_runspec_diff(&p1, &p2));

    static const struct {
        const char *from, *to, *want;
    } cases[] = {
        {"\"lora_rank\":4,", "", "train.lora_rank: missing"},
        {"\"lora_targets\":\"mlp.c_fc\",", "", "train.lora_targets: missing"},
        {"\"adapter\":\"lora\",", "", "only in a run with train.adapter = lora"},
        {"\"adapter\":\"lora\"", "\"adapter\":\"qlora\"", "train.adapter"},
        {"\"lora_rank\":4", "\"lora_rank\":65", "train.lora_rank"},
        {"\"lora_rank\":4", "\"lora_rank\":0", "train.lora_rank"},
        {"\"lora_alpha\":8", "\"lora_alpha\":0", "train.lora_alpha"},
        {"\"lora_targets\":\"mlp.c_fc\"", "\"lora_targets\":\"mlp.fc\"", "train.lora_targets"},
        {"\"lora_targets\":\"mlp.c_fc\"", "\"lora_targets\":\"\"", "train.lora_targets"},
        {"\"trainable\":\".*\"", "\"trainable\":\"^wte\"", "selects no adapter tensor"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *at = strstr(buf, cases[i].from);
        assert_non_null(at);
        char doc[SW_RUNSPEC_MAX_BYTES + 64];
        snprintf(doc, sizeof doc, "%.*s%s%s", (int)(at - buf), buf, cases[i].to,
                 at + strlen(cases[i].from));
        int rc = sw_runspec_parse(doc, strlen(doc), "spec.json", &back, &d);
        if (rc == 0) fail_msg("case %zu: accepted %s", i, doc);
        if (strstr(d.msg, cases[i].want) == NULL)
            fail_msg("case %zu: diag '%s' does not name '%s'", i, d.msg, cases[i].want);
    }
}

/* train.trainable_tokens: in the canonical form only when set (earlier run ids
 * stand), parsed into the spec's rows, refused when malformed. */
static void test_trainable_tokens(void **state)
{
    (void)state;
    sw_runspec rs, back;
    test_spec(&rs);
    snprintf(rs.trainable, sizeof rs.trainable, "^wte");
    char buf[SW_RUNSPEC_MAX_BYTES];
    size_t len;
    sw_diag d = {{0}};
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
    assert_null(strstr(buf, "trainable_tokens"));
    snprintf(rs.trainable_tokens, sizeof rs.trainable_tokens, "7,4141,50256");
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
    assert_non_null(strstr(buf, "\"trainable\":\"^wte\",\"trainable_tokens\":\"7,4141,50256\""));
    assert_int_equal(sw_runspec_parse(buf, len, "t.json", &back, &d), 0);
    assert_null(sw_runspec_diff(&rs, &back));
    sw_train_spec ts;
    assert_int_equal(sw_runspec_train_spec(&back, &ts, &d), 0);
    assert_int_equal(ts.n_rows, 3);
    assert_int_equal(ts.rows[1], 4141);
    assert_true(sw_train_spec_row(&ts, 50256) && !sw_train_spec_row(&ts, 8));
    int32_t rows[SW_SPEC_MAX_ROWS];
    int n;
    const char *bad[] = {"", "1,", ",1", "2,1", "1,1", "1;2", "50257", "x", "completions"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sw_runspec_rows(bad[i], 50257, rows, &n, &d), SW_EINVAL);
    char many[400] = "";
    for (int i = 0; i <= SW_SPEC_MAX_ROWS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s%d", i ? "," : "", i);
    assert_int_equal(sw_runspec_rows(many, 50257, rows, &n, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "more than"));
    /* rows of wte need wte trained */
    snprintf(rs.trainable, sizeof rs.trainable, "^h\\.");
    assert_int_equal(sw_runspec_validate(&rs, "x", &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "does not select wte"));
}

static void test_validate_bounds(void **state)
{
    (void)state;
    sw_runspec rs;
    sw_diag d = {{0}};
    char buf[SW_RUNSPEC_MAX_BYTES];
    size_t len;
    test_spec(&rs);
    rs.lr = NAN;
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "train.lr"));
    test_spec(&rs);
    rs.eps = INFINITY;
    assert_int_equal(sw_runspec_validate(&rs, "cfg", &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "cfg: train.eps"));
    test_spec(&rs);
    snprintf(rs.trainable, sizeof rs.trainable, "attn\n");
    assert_int_equal(sw_runspec_validate(&rs, "cfg", &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "train.trainable"));
    /* -0 is a valid weight decay and serialises as 0, like JSON.stringify(-0). */
    test_spec(&rs);
    rs.weight_decay = -0.0;
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
    assert_non_null(strstr(buf, "\"weight_decay\":0}"));
    /* A quote or backslash in the pattern is escaped. */
    test_spec(&rs);
    snprintf(rs.trainable, sizeof rs.trainable, "h\\.0\\.(attn|\"mlp\")");
    assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
    assert_non_null(strstr(buf, "\"trainable\":\"h\\\\.0\\\\.(attn|\\\"mlp\\\")\""));
    sw_runspec back;
    assert_int_equal(sw_runspec_parse(buf, len, "x", &back, &d), 0);
    assert_string_equal(back.trainable, rs.trainable);
    /* Too small a buffer. */
    assert_int_equal(sw_runspec_canonical(&rs, buf, 100, &len, &d), SW_ETOOBIG);
}

static void test_diff_names_first_key(void **state)
{
    (void)state;
    sw_runspec a, b;
    test_spec(&a);
    test_spec(&b);
    assert_null(sw_runspec_diff(&a, &b));
    b.weight_decay = 0.2;
    assert_string_equal(sw_runspec_diff(&a, &b), "train.weight_decay");
    b.lr = 1e-3;
    assert_string_equal(sw_runspec_diff(&a, &b), "train.lr");
    b.arch.n_embd = 128;
    assert_string_equal(sw_runspec_diff(&a, &b), "arch.n_embd");
    b.base_digest[31] ^= 1;
    assert_string_equal(sw_runspec_diff(&a, &b), "arch.n_embd");
    test_spec(&b);
    b.base_digest[31] ^= 1;
    assert_string_equal(sw_runspec_diff(&a, &b), "base_model");
    test_spec(&b);
    snprintf(b.trainable, sizeof b.trainable, "attn");
    assert_string_equal(sw_runspec_diff(&a, &b), "train.trainable");
    test_spec(&b);
    b.arch.tie_word_embeddings = false;
    assert_string_equal(sw_runspec_diff(&a, &b), "arch.tie_word_embeddings");
}

static void test_write_and_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/sw_test_runspec_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/runspec.json", dir);
    sw_runspec rs, back;
    sw_diag d = {{0}};
    test_spec(&rs);
    assert_int_equal(sw_runspec_write(path, &rs, &d), 0);
    char *buf;
    size_t len;
    assert_int_equal(sw_file_read(path, 1 << 16, &buf, &len, &d), 0);
    assert_int_equal(len, strlen(golden)); /* no newline: b2sum gives the run id */
    assert_memory_equal(buf, golden, len);
    free(buf);
    assert_int_equal(sw_runspec_load(path, &back, &d), 0);
    assert_null(sw_runspec_diff(&rs, &back));
    unlink(path);
    assert_int_equal(sw_runspec_load(path, &back, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, path));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_matches_ecmascript),
        cmocka_unit_test(test_number_roundtrips),
        cmocka_unit_test(test_canonical_golden_and_run_id),
        cmocka_unit_test(test_parse_any_layout),
        cmocka_unit_test(test_parse_errors_name_the_key),
        cmocka_unit_test(test_adapter_keys),
        cmocka_unit_test(test_trainable_tokens),
        cmocka_unit_test(test_validate_bounds),
        cmocka_unit_test(test_diff_names_first_key),
        cmocka_unit_test(test_write_and_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

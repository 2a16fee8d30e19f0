"""Product and tile metadata parsing on hand-written XML in ESA's structure."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from evi_udf.errors import MetadataError
from evi_udf.raster.metadata import parse_product_metadata, parse_tile_metadata

L2A_05 = b"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
 <n1:General_Info>
  <Product_Info>
   <PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>
   <Product_Organisation><Granule_List><Granule granuleIdentifier="L2A_T29SND_A019940_20201230T112446">
    <IMAGE_FILE>GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R10m/T29SND_20201230T112359_B02_10m</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R20m/T29SND_20201230T112359_B02_20m</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R10m/T29SND_20201230T112359_B04_10m</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R10m/T29SND_20201230T112359_B08_10m</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R20m/T29SND_20201230T112359_SCL_20m</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R60m/T29SND_20201230T112359_SCL_60m</IMAGE_FILE>
   </Granule></Granule_List></Product_Organisation>
  </Product_Info>
  <Product_Image_Characteristics>
   <QUANTIFICATION_VALUES_LIST>
    <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
    <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
   </QUANTIFICATION_VALUES_LIST>
   <BOA_ADD_OFFSET_VALUES_LIST>
    <BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET>
    <BOA_ADD_OFFSET band_id="3">-1000</BOA_ADD_OFFSET>
    <BOA_ADD_OFFSET band_id="7">-1000</BOA_ADD_OFFSET>
    <BOA_ADD_OFFSET band_id="8">-1000</BOA_ADD_OFFSET>
   </BOA_ADD_OFFSET_VALUES_LIST>
   <Spectral_Information_List>
    <Spectral_Information bandId="1" physicalBand="B2"/>
    <Spectral_Information bandId="8" physicalBand="B8A"/>
   </Spectral_Information_List>
  </Product_Image_Characteristics>
 </n1:General_Info>
</n1:Level-2A_User_Product>
"""

L1C_02 = b"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
 <n1:General_Info>
  <Product_Info>
   <PROCESSING_BASELINE>02.05</PROCESSING_BASELINE>
   <Product_Organisation><Granule_List><Granule granuleIdentifier="L1C_T14SPJ_A009976_20170520T172251">
    <IMAGE_FILE>GRANULE/L1C_T14SPJ_A009976_20170520T172251/IMG_DATA/T14SPJ_20170520T171301_B02</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L1C_T14SPJ_A009976_20170520T172251/IMG_DATA/T14SPJ_20170520T171301_B04</IMAGE_FILE>
    <IMAGE_FILE>GRANULE/L1C_T14SPJ_A009976_20170520T172251/IMG_DATA/T14SPJ_20170520T171301_B08</IMAGE_FILE>
   </Granule></Granule_List></Product_Organisation>
  </Product_Info>
  <Product_Image_Characteristics>
   <QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
  </Product_Image_Characteristics>
 </n1:General_Info>
</n1:Level-1C_User_Product>
"""

L1C_OLD_FORMAT = b"""<?xml version="1.0" encoding="UTF-8"?>
<psd-13:Level-1C_User_Product xmlns:psd-13="https://psd-13.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
 <psd-13:General_Info><Product_Info>
  <PROCESSING_BASELINE>02.01</PROCESSING_BASELINE>
  <Product_Organisation><Granule_List>
   <Granule granuleIdentifier="S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_N02.01">
    <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_B04</IMAGE_ID>
   </Granule>
  </Granule_List></Product_Organisation>
 </Product_Info>
 <Product_Image_Characteristics><QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
 </Product_Image_Characteristics></psd-13:General_Info>
</psd-13:Level-1C_User_Product>
"""

TILE = b"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd">
 <n1:General_Info>
  <TILE_ID metadataLevel="Brief">S2B_OPER_MSI_L2A_TL_VGS4_20201230T132319_A019940_T29SND_N02.14</TILE_ID>
  <SENSING_TIME metadataLevel="Standard">2020-12-30T11:24:46.024Z</SENSING_TIME>
 </n1:General_Info>
 <n1:Geometric_Info><Tile_Geocoding metadataLevel="Brief">
  <HORIZONTAL_CS_NAME>WGS84 / UTM zone 29N</HORIZONTAL_CS_NAME>
  <HORIZONTAL_CS_CODE>EPSG:32629</HORIZONTAL_CS_CODE>
  <Size resolution="10"><NROWS>10980</NROWS><NCOLS>10980</NCOLS></Size>
  <Size resolution="20"><NROWS>5490</NROWS><NCOLS>5490</NCOLS></Size>
  <Geoposition resolution="10"><ULX>499980</ULX><ULY>4400040</ULY><XDIM>10</XDIM><YDIM>-10</YDIM></Geoposition>
  <Geoposition resolution="20"><ULX>499980</ULX><ULY>4400040</ULY><XDIM>20</XDIM><YDIM>-20</YDIM></Geoposition>
 </Tile_Geocoding></n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""


def test_l2a_product_offsets_quantification_and_bands() -> None:
    meta = parse_product_metadata(L2A_05, "MTD_MSIL2A.xml")
    assert meta.level == "L2A"
    assert meta.processing_baseline == "05.09"
    assert meta.quantification == 10000.0
    # band_id 1 = B02, 3 = B04, 7 = B08, 8 = B8A (physicalBand given as B8A).
    assert meta.offset("B02") == -1000.0
    assert meta.offset("B04") == -1000.0
    assert meta.offset("B08") == -1000.0
    assert meta.offsets["B8A"] == -1000.0
    granule = "GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA"
    # The 10 m file is preferred for B02 although a 20 m one is listed; SCL's native 20 m over 60 m.
    assert meta.band_file("B02") == f"{granule}/R10m/T29SND_20201230T112359_B02_10m.jp2"
    assert meta.band_file("SCL") == f"{granule}/R20m/T29SND_20201230T112359_SCL_20m.jp2"


def test_l1c_before_baseline_04_has_no_offset() -> None:
    meta = parse_product_metadata(L1C_02, "MTD_MSIL1C.xml")
    assert meta.level == "L1C"
    assert meta.processing_baseline == "02.05"
    assert not meta.has_offsets
    assert meta.offset("B04") == 0.0
    assert meta.band_file("B08") == (
        "GRANULE/L1C_T14SPJ_A009976_20170520T172251/IMG_DATA/T14SPJ_20170520T171301_B08.jp2"
    )


def test_l1c_radiometric_offset_list() -> None:
    xml = L1C_02.replace(b"02.05", b"04.00").replace(
        b"</Product_Image_Characteristics>",
        b'<Radiometric_Offset_List><RADIO_ADD_OFFSET band_id="3">-1000</RADIO_ADD_OFFSET>'
        b"</Radiometric_Offset_List></Product_Image_Characteristics>",
    )
    meta = parse_product_metadata(xml, "MTD_MSIL1C.xml")
    assert meta.offset("B04") == -1000.0
    with pytest.raises(MetadataError, match="MTD_MSIL1C.xml: offset list has no entry for band B02"):
        meta.offset("B02")


def test_oldest_l1c_format_uses_image_id_in_the_granule_folder() -> None:
    meta = parse_product_metadata(L1C_OLD_FORMAT, "old/MTD")
    granule = "S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_N02.01"
    assert meta.band_file("B04") == (
        f"GRANULE/{granule}/IMG_DATA/S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_B04.jp2"
    )


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<not-closed>", "bad.xml: not valid XML"),
        (
            L2A_05.replace(b"<PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>", b""),
            "PROCESSING_BASELINE is missing",
        ),
        (L2A_05.replace(b"05.09", b"five"), "PROCESSING_BASELINE 'five' is not like 04.00"),
        (L2A_05.replace(b">10000<", b">ten<"), "BOA_QUANTIFICATION_VALUE is not a number: 'ten'"),
        (L2A_05.replace(b'band_id="7"', b'band_id="77"'), "unknown band_id '77'"),
        (
            L1C_02.replace(b"IMAGE_FILE", b"OTHER_FILE"),
            "lists no band files: none of IMAGE_FILE, IMAGE_FILE_2A",
        ),
        (b"<Something/>", "neither a Level-1C nor a Level-2A product"),
    ],
)
def test_bad_product_metadata_names_the_file_and_field(xml: bytes, message: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_product_metadata(xml, "bad.xml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("bad.xml: ")


def test_missing_band_names_the_file() -> None:
    meta = parse_product_metadata(L1C_02, "s/MTD_MSIL1C.xml")
    with pytest.raises(MetadataError, match="s/MTD_MSIL1C.xml: no IMAGE_FILE for band SCL"):
        meta.band_file("SCL")


def test_tile_geocoding() -> None:
    tile = parse_tile_metadata(TILE, "MTD_TL.xml")
    assert tile.tile_id.endswith("_T29SND_N02.14")
    assert tile.sensing_time == dt.datetime(2020, 12, 30, 11, 24, 46, 24000, tzinfo=dt.timezone.utc)
    ten = tile.geocoding[10]
    assert (ten.epsg, ten.rows, ten.cols, ten.ulx, ten.uly, ten.xdim, ten.ydim) == (
        32629,
        10980,
        10980,
        499980.0,
        4400040.0,
        10.0,
        -10.0,
    )
    assert tile.geocoding[20].rows == 5490


def test_tile_with_bad_crs_code_fails_clearly() -> None:
    with pytest.raises(MetadataError, match="HORIZONTAL_CS_CODE 'WGS84' is not like EPSG:32755"):
        parse_tile_metadata(TILE.replace(b"EPSG:32629", b"WGS84"), "MTD_TL.xml")


# The oldest L1C format (PSD 13, 2015-2016): one product, several tiles' granules, each listed as
# <Granules granuleIdentifier=...> with IMAGE_ID entries (ESA's User Product Level-1C, PSD 13).
L1C_PSD13_TWO_TILES = b"""<?xml version="1.0" encoding="UTF-8"?>
<psd-13:Level-1C_User_Product xmlns:psd-13="https://psd-13.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
 <psd-13:General_Info><Product_Info>
  <PRODUCT_URI>S2A_OPER_PRD_MSIL1C_PDMC_20151223T100202_R046_V20151223T023913_20151223T023913.SAFE</PRODUCT_URI>
  <PROCESSING_BASELINE>02.01</PROCESSING_BASELINE>
  <Query_Options><Band_List><BAND_NAME>B02</BAND_NAME><BAND_NAME>B04</BAND_NAME></Band_List></Query_Options>
  <Product_Organisation>
   <Granule_List>
    <Granules datastripIdentifier="S2A_OPER_MSI_L1C_DS_SGS__20151223T041908_S20151223T023913_N02.01" granuleIdentifier="S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_N02.01" imageFormat="JPEG2000">
     <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_B02</IMAGE_ID>
     <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_B04</IMAGE_ID>
     <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWP_B08</IMAGE_ID>
    </Granules>
   </Granule_List>
   <Granule_List>
    <Granules datastripIdentifier="S2A_OPER_MSI_L1C_DS_SGS__20151223T041908_S20151223T023913_N02.01" granuleIdentifier="S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWQ_N02.01" imageFormat="JPEG2000">
     <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWQ_B02</IMAGE_ID>
     <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWQ_B04</IMAGE_ID>
     <IMAGE_ID>S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWQ_B08</IMAGE_ID>
    </Granules>
   </Granule_List>
  </Product_Organisation>
 </Product_Info>
 <Product_Image_Characteristics><QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
 </Product_Image_Characteristics></psd-13:General_Info>
</psd-13:Level-1C_User_Product>
"""

# The 2017-2018 L2A format (PSD 14.2, baselines 02.05-02.08, Sen2Cor 2.4/2.5): L2A_Product_Info,
# IMAGE_FILE_2A and L2A_BOA_QUANTIFICATION_VALUE.
L2A_PSD142 = b"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
 <n1:General_Info>
  <L2A_Product_Info>
   <PROCESSING_BASELINE>02.07</PROCESSING_BASELINE>
   <L2A_Product_Organisation><Granule_List><Granule datastripIdentifier="S2A_USER_MSI_L2A_DS_SGS__20171201T120502_S20171201T101401_N02.07" granuleIdentifier="S2A_USER_MSI_L2A_TL_SGS__20171201T120502_A012878_T32TQM_N02.07" imageFormat="JPEG2000">
    <IMAGE_FILE_2A>GRANULE/L2A_T32TQM_A012878_20171201T101401/IMG_DATA/R10m/L2A_T32TQM_20171201T101401_B02_10m</IMAGE_FILE_2A>
    <IMAGE_FILE_2A>GRANULE/L2A_T32TQM_A012878_20171201T101401/IMG_DATA/R10m/L2A_T32TQM_20171201T101401_B04_10m</IMAGE_FILE_2A>
    <IMAGE_FILE_2A>GRANULE/L2A_T32TQM_A012878_20171201T101401/IMG_DATA/R10m/L2A_T32TQM_20171201T101401_B08_10m</IMAGE_FILE_2A>
    <IMAGE_FILE_2A>GRANULE/L2A_T32TQM_A012878_20171201T101401/IMG_DATA/R20m/L2A_T32TQM_20171201T101401_SCL_20m</IMAGE_FILE_2A>
   </Granule></Granule_List></L2A_Product_Organisation>
  </L2A_Product_Info>
  <L2A_Product_Image_Characteristics>
   <L2A_QUANTIFICATION_VALUES_LIST>
    <L2A_BOA_QUANTIFICATION_VALUE unit="none">10000</L2A_BOA_QUANTIFICATION_VALUE>
    <L2A_AOT_QUANTIFICATION_VALUE unit="none">1000.0</L2A_AOT_QUANTIFICATION_VALUE>
   </L2A_QUANTIFICATION_VALUES_LIST>
  </L2A_Product_Image_Characteristics>
 </n1:General_Info>
</n1:Level-2A_User_Product>
"""


def test_oldest_l1c_format_gives_the_band_files_of_the_tile_being_read() -> None:
    for tile in ("51RWP", "51RWQ"):
        meta = parse_product_metadata(L1C_PSD13_TWO_TILES, "old.xml", tile=tile)
        granule = f"S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T{tile}"
        assert meta.band_file("B08") == f"GRANULE/{granule}_N02.01/IMG_DATA/{granule}_B08.jp2"
        assert (meta.level, meta.processing_baseline, meta.quantification, meta.has_offsets) == (
            "L1C",
            "02.01",
            10000.0,
            False,
        )
    by_granule = parse_product_metadata(
        L1C_PSD13_TWO_TILES,
        "old.xml",
        granule_id="S2A_OPER_MSI_L1C_TL_SGS__20151223T041908_A002617_T51RWQ_N02.01",
    )
    assert "_T51RWQ_B04" in by_granule.band_file("B04")
    with pytest.raises(MetadataError, match="old.xml: holds 2 granules and none is of tile 51RWR"):
        parse_product_metadata(L1C_PSD13_TWO_TILES, "old.xml", tile="51RWR")
    with pytest.raises(MetadataError, match="holds 2 granules and none is of tile"):
        parse_product_metadata(L1C_PSD13_TWO_TILES, "old.xml")


def test_2017_l2a_format_reads_its_own_tag_names() -> None:
    meta = parse_product_metadata(L2A_PSD142, "MTD_MSIL2A.xml", tile="32TQM")
    assert (meta.level, meta.processing_baseline, meta.quantification) == ("L2A", "02.07", 10000.0)
    assert meta.offset("B04") == 0.0
    granule = "GRANULE/L2A_T32TQM_A012878_20171201T101401/IMG_DATA"
    assert meta.band_file("B02") == f"{granule}/R10m/L2A_T32TQM_20171201T101401_B02_10m.jp2"
    assert meta.band_file("SCL") == f"{granule}/R20m/L2A_T32TQM_20171201T101401_SCL_20m.jp2"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        # A product of baseline 04.00 or later without its offset list must not read as offset 0.
        (
            re.sub(rb"<BOA_ADD_OFFSET_VALUES_LIST>.*</BOA_ADD_OFFSET_VALUES_LIST>", b"", L2A_05, flags=re.S),
            "processing baseline 05.09 products carry a BOA_ADD_OFFSET list, but this one has none",
        ),
        (L2A_05.replace(b">10000<", b">inf<"), "BOA_QUANTIFICATION_VALUE is not a finite number: 'inf'"),
        (L2A_05.replace(b">10000<", b">-1<"), "BOA_QUANTIFICATION_VALUE must be a finite positive number"),
        (
            L2A_05.replace(b'band_id="3">-1000<', b'band_id="3">nan<'),
            "BOA_ADD_OFFSET is not a finite number: 'nan'",
        ),
        (
            L2A_05.replace(b'band_id="3">-1000<', b'band_id="3">-20000<'),
            "BOA_ADD_OFFSET of band B04 is -20000.0",
        ),
        (
            L2A_PSD142.replace(b"L2A_BOA_QUANTIFICATION_VALUE", b"L2A_WHAT"),
            "no quantification value (BOA_QUANTIFICATION_VALUE or L2A_BOA_QUANTIFICATION_VALUE)",
        ),
        (
            L2A_05.replace(
                b"GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R10m/T29SND_20201230T112359_B02_10m",
                b"../../etc/T29SND_B02_10m",
            ),
            "band file '../../etc/T29SND_B02_10m' is not a path inside the product folder",
        ),
        (
            L2A_05.replace(
                b"GRANULE/L2A_T29SND_A019940_20201230T112446/IMG_DATA/R10m/T29SND_20201230T112359_B04_10m",
                b"/abs/T29SND_B04_10m",
            ),
            "is not a path inside the product folder",
        ),
    ],
)
def test_values_that_would_be_taken_silently_are_named_errors(xml: bytes, message: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_product_metadata(xml, "bad.xml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("bad.xml: ")


def test_the_oldest_products_metadata_is_found_under_its_own_name() -> None:
    from evi_udf.run.process import product_metadata_candidates

    old = "gs://gcp-public-data-sentinel-2/tiles/51/R/WP/S2A_OPER_PRD_MSIL1C_PDMC_20151223T100202_R046_V20151223T023913_20151223T023913.SAFE"
    assert product_metadata_candidates(old, "L1C") == [
        f"{old}/MTD_MSIL1C.xml",
        f"{old}/S2A_OPER_MTD_SAFL1C_PDMC_20151223T100202_R046_V20151223T023913_20151223T023913.xml",
    ]
    new = "gs://b/L2/tiles/29/S/ND/S2B_MSIL2A_20201230T112359_N0214_R037_T29SND_20201230T132319.SAFE"
    assert product_metadata_candidates(new, "L2A") == [f"{new}/MTD_MSIL2A.xml"]
